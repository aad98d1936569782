"""Library runs through the real CLI: `focaltag tag DIR -o tags.jsonl` (resume, kill, refresh, shards) and `merge-tags`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from focaltag.cli import main
from focaltag.data.tags import MOODTHEME_TAGS
from focaltag.library.runs import failures_path, iter_library, path_key, read_output
from focaltag.outputs.writers import JSON_KEYS

FOCALTAG = Path(sys.executable).parent / "focaltag"
# Most runs use --top-k 0: a random model's probabilities are near-ties, which would make the bf16 path re-check
# every file in float32 (slow, and beside the point of these tests).


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised narrow paper-variant model (56 mood/theme tags) saved with save_model."""
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56, width=8),
                      tmp_path_factory.mktemp("model") / "tiny.pt")


def _make_library(root: Path, n: int, *, seconds: float = 0.5, seed: int = 0) -> list[str]:
    """``n`` short noise WAV files spread over nested folders; returns their paths as the walk finds them."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / f"artist{i % 4}" / f"album{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"track{i:04d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        paths.append(str(path))
    return paths


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_output_lines_have_the_json_schema_plus_size_and_mtime(tiny_model: Path, tmp_path: Path) -> None:
    files = _make_library(tmp_path / "lib", 5)
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "--chunks", "2",
                 "--top-k", "3", "-q"]) == 0
    lines = _lines(out)
    assert sorted(d["file"] for d in lines) == sorted(files)
    for d in lines:
        assert set(JSON_KEYS) - {"decisions"} <= set(d) and {"size", "mtime"} <= set(d)
        st = os.stat(d["file"])
        assert d["size"] == st.st_size and d["mtime"] == st.st_mtime
        assert set(d["tags"]) == set(MOODTHEME_TAGS) and len(d["top"]) == 3
    assert not failures_path(out).exists()


def test_kill_mid_run_then_rerun_gives_every_file_exactly_one_line(tiny_model: Path, tmp_path: Path) -> None:
    files = _make_library(tmp_path / "lib", 80)
    out = tmp_path / "tags.jsonl"
    cmd = [str(FOCALTAG), "tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "--chunks", "4",
           "--batch-size", "1", "--top-k", "0", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = out.read_bytes().count(b"\n")
    assert 10 <= done_before < len(files)
    with open(out, "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write(b'{"file": "' + files[-1].encode() + b'", "duration": 0.5, "ta')

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(files) - done_before} tagged, {done_before} skipped" in rerun.stderr
    lines = _lines(out)  # every line parses: the partial one was repaired
    names = [d["file"] for d in lines]
    assert sorted(names) == sorted(files) and len(names) == len(set(names))


def test_failures_are_listed_then_retried(tiny_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _make_library(tmp_path / "lib", 3)
    bad = tmp_path / "lib" / "broken.wav"
    bad.write_bytes(b"this is not audio")
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "--chunks", "2", "--top-k", "0", "-q"]
    assert main(argv) == 1
    rows = [line.split("\t") for line in failures_path(out).read_text().splitlines()]
    assert [r[0] for r in rows] == [str(bad)] and "decode" in rows[0][1]
    assert str(bad) not in {d["file"] for d in _lines(out)}
    assert "3 tagged, 0 skipped" in capsys.readouterr().err

    sf.write(bad, np.zeros(8000, dtype=np.float32), 16000)  # the user fixes the file
    assert main(argv) == 0
    assert "1 tagged, 3 skipped (already in the output), 0 failed" in capsys.readouterr().err
    assert not failures_path(out).exists()
    assert len(_lines(out)) == 4


def test_refresh_retags_changed_files_and_keeps_one_line_per_file(tiny_model: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    files = _make_library(tmp_path / "lib", 4)
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "--chunks", "2", "--top-k", "0", "-q"]
    assert main(argv) == 0
    before = {d["file"]: d for d in _lines(out)}
    changed = files[1]
    sf.write(changed, 0.5 * np.sin(np.linspace(0, 3000, 24000)).astype(np.float32), 16000)
    os.utime(changed, (1_000_000_000, 1_000_000_000))

    assert main(argv) == 0  # without --refresh a recorded path is skipped
    assert "0 tagged, 4 skipped" in capsys.readouterr().err
    assert main([*argv, "--refresh"]) == 0
    assert "1 tagged, 3 skipped" in capsys.readouterr().err
    after = _lines(out)
    assert sorted(d["file"] for d in after) == sorted(files)  # exactly one line per file
    new = next(d for d in after if d["file"] == changed)
    assert new["mtime"] == 1_000_000_000 and new["size"] == os.stat(changed).st_size
    assert new["duration"] == 1.5 and new["tags"] != before[changed]["tags"]
    for d in after:
        if d["file"] != changed:
            assert d == before[d["file"]]


def test_two_shards_are_disjoint_and_cover_everything_then_merge(tiny_model: Path, tmp_path: Path) -> None:
    files = _make_library(tmp_path / "lib", 24)
    outs = [tmp_path / f"shard{i}.jsonl" for i in range(2)]
    for i, out in enumerate(outs):
        assert main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "--shard", f"{i}/2",
                     "--chunks", "2", "--workers", str(i + 1), "--top-k", "0", "-q"]) == 0
    shard_files = [{d["file"] for d in _lines(out)} for out in outs]
    assert shard_files[0] and shard_files[1]
    assert not shard_files[0] & shard_files[1]
    assert shard_files[0] | shard_files[1] == set(files)

    merged = tmp_path / "all.jsonl"
    assert main(["merge-tags", str(merged), *map(str, outs)]) == 0
    lines = _lines(merged)
    assert sorted(d["file"] for d in lines) == sorted(files)
    by_file = {d["file"]: d for out in outs for d in _lines(out)}
    assert all(by_file[d["file"]] == d for d in lines)


def test_shards_follow_the_path_relative_to_the_folder(tmp_path: Path) -> None:
    for root in ("a", "b/c"):
        _make_library(tmp_path / root, 10, seconds=0.01)
    for i in range(3):
        a = [f.rel for f in iter_library([tmp_path / "a"], shard=(i, 3))]
        b = [f.rel for f in iter_library([tmp_path / "b" / "c"], shard=(i, 3))]
        assert a == b  # the same library mounted elsewhere splits the same way
    assert sum(len(list(iter_library([tmp_path / "a"], shard=(i, 3)))) for i in range(3)) == 10


def test_merge_refuses_a_file_tagged_twice_differently(tiny_model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _make_library(tmp_path / "lib", 2)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(one), "--chunks", "2", "-q"]) == 0
    lines = _lines(one)
    lines[0]["tags"][MOODTHEME_TAGS[0]] += 0.25
    two.write_text("".join(json.dumps(d) + "\n" for d in lines))
    merged = tmp_path / "all.jsonl"
    assert main(["merge-tags", str(merged), str(one), str(two)]) == 2
    err = capsys.readouterr().err
    assert "tagged twice with different results" in err and lines[0]["file"] in err
    assert not merged.exists()
    # identical duplicates (a shard merged twice) are fine and kept once
    assert main(["merge-tags", str(merged), str(one), str(one)]) == 0
    assert len(_lines(merged)) == 2


def test_read_output_repairs_only_the_last_line(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    out.write_text('{"file": "a", "size": 1, "mtime": 2}\n{"file": "b", "si')
    state = read_output(out)
    assert set(state.lines) == {path_key("a")} and out.read_text() == '{"file": "a", "size": 1, "mtime": 2}\n'
    out.write_text('{"file": "a"}\nnot json\n{"file": "b"}\n')
    from focaltag.errors import DataError

    with pytest.raises(DataError, match="line 2 is not JSON"):
        read_output(out)


@pytest.mark.parametrize(("extra", "message"), [
    (["--refresh"], "--refresh needs an output file"),
    (["--shard", "0/2"], "--shard needs an output file"),
    (["--shard", "2/2", "-o", "x.jsonl"], "0 <= I < N"),
    (["--replace"], "--replace only applies with --write-tags"),
    (["-o", "x.jsonl", "--format", "csv"], "drop --format"),
])
def test_library_usage_errors_exit_2(extra: list[str], message: str, tiny_model: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _make_library(tmp_path / "lib", 1, seconds=0.1)
    extra = [str(tmp_path / e) if e == "x.jsonl" else e for e in extra]
    try:
        rc = main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), *extra, "-q"])
    except SystemExit as exc:  # argparse's own checks (the shard syntax)
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_second_run_on_the_same_output_is_refused(tiny_model: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag._locks import lock_path, try_lock

    _make_library(tmp_path / "lib", 1, seconds=0.1)
    out = tmp_path / "tags.jsonl"
    held = try_lock(lock_path(out))  # what a running `tag -o` holds
    assert held is not None
    try:
        assert main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "-q"]) == 2
    finally:
        held.release()
    assert "another focaltag run is writing" in capsys.readouterr().err
    assert main(["tag", str(tmp_path / "lib"), "-m", str(tiny_model), "-o", str(out), "-q"]) == 0  # released


def test_file_names_that_are_not_utf8_do_not_break_the_run(tiny_model: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "ok.wav", np.zeros(8000, dtype=np.float32), 16000)
    os.rename(lib / "ok.wav", os.path.join(os.fsencode(lib), b"caf\xe9.wav"))  # Latin-1 bytes in a name
    name = str(lib / os.fsdecode(b"caf\xe9.wav"))
    sf.write(lib / "plain.wav", np.zeros(8000, dtype=np.float32), 16000)
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "-o", str(out), "--chunks", "1", "--top-k", "0", "-q"]
    assert main(argv) in (0, 1)  # 1 if the decoder cannot open such a name: then it is a listed failure
    tagged = [d["file"] for d in _lines(out)]
    failed = failures_path(out).read_text().splitlines() if failures_path(out).exists() else []
    assert str(lib / "plain.wav") in tagged
    assert (name in tagged) != (len(failed) == 1)  # recorded exactly once, in one of the two
    if name in tagged:
        assert main(argv) == 0 and len(_lines(out)) == 2


def test_a_folder_without_audio_is_an_input_error(tiny_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(tmp_path / "empty"), "-m", str(tiny_model), "-o", str(out), "-q"]) == 2
    assert "no audio files under" in capsys.readouterr().err and not out.exists()
