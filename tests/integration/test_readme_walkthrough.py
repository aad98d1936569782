"""The README's real-data walkthrough, command for command, against a loopback audio mirror serving a tiny
fabricated MTG-Jamendo (generated tracks, its own split files, tar archives and SHA-256 manifests).

The commands are read from the README's bash block, so the test breaks when the README drifts. Each runs with the
shipped configs unedited; the only additions are the test's plumbing (the mirror URL and local
``--manifest-dir`` / ``--metadata-dir``, since fabricated files cannot match the pinned blob ids) and tiny
``--set`` sizes so the recipe trains in seconds.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shlex
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from focaltag.cli import main
from focaltag.cli.data_download import _size
from focaltag.data.metadata import SUBSETS, read_tracks
from focaltag.data.synth import synthesize_dataset

README = Path(__file__).resolve().parents[2] / "README.md"
DATASET, TYPE = "autotagging_moodtheme", "audio-low"
TINY = ["--set", "model.width=4", "--set", "optim.epochs=1", "--set", "optim.adam_epochs=1",
        "--set", "optim.batch_size=8", "--set", "validation.n_chunks=2", "--set", "runtime.device=cpu",
        "--set", "runtime.num_workers=0", "--set", "runtime.channels_last=false",
        "--set", "runtime.max_steps_per_epoch=2", "--set", "data.prepare_workers=1"]


def walkthrough_commands() -> list[str]:
    """The `focaltag ...` lines of the bash block in the README's real-data section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Running on the real MTG-Jamendo data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the real-data section lost its bash block"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip().startswith("focaltag ")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    """A tiny fabricated dataset: metadata folder, manifests, tar archives on a 127.0.0.1 HTTP mirror."""
    root = tmp_path_factory.mktemp("fabricated")
    src = root / "mtg-jamendo-dataset" / "data"  # laid out like a clone's data/ folder
    synthesize_dataset(src, n_tracks=40, seed=4, min_duration=5.0, max_duration=5.5, workers=1)
    tracks = sorted(p.relative_to(src / "audio").as_posix() for p in (src / "audio").rglob("*.mp3"))
    serve = root / "mirror" / DATASET / TYPE
    serve.mkdir(parents=True)
    halves = {f"{DATASET}_{TYPE}-00.tar": tracks[::2], f"{DATASET}_{TYPE}-01.tar": tracks[1::2]}
    track_sums = {}
    for name, members in halves.items():
        with tarfile.open(serve / name, "w") as tar:
            for rel in members:
                low = rel[: -len(".mp3")] + ".low.mp3"  # the archives' audio-low names
                tar.add(src / "audio" / rel, arcname=low)
                track_sums[low] = _sha(src / "audio" / rel)
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / f"{DATASET}_{TYPE}_sha256_tars.txt").write_text(
        "".join(f"{_sha(serve / n)} {n}\n" for n in halves))
    (manifests / f"{DATASET}_{TYPE}_sha256_tracks.txt").write_text(
        "".join(f"{h} {n}\n" for n, h in sorted(track_sums.items())))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "mirror"))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    music = root / "Music"
    music.mkdir()
    (music / "song.mp3").write_bytes((src / "audio" / tracks[0]).read_bytes())
    try:
        yield {"src": src, "manifests": manifests, "url": f"http://127.0.0.1:{server.server_address[1]}",
               "mirror": root / "mirror",
               "music": music, "n_tracks": len(tracks)}
    finally:
        server.shutdown()
        server.server_close()


def _extra(cmd: list[str], fab: dict[str, Path | str]) -> list[str]:
    """The test's plumbing for one command (appended: a later argparse option wins)."""
    if cmd[:2] == ["data", "download"]:
        return ["--base-url", str(fab["url"]), "--manifest-dir", str(fab["manifests"]), "--metadata-dir",
                str(fab["src"]), "--backoff", "0", "--timeout", "20"]
    if cmd[:2] == ["data", "prepare"]:
        return ["--workers", "1"]
    if cmd[0] == "train":
        return TINY
    if cmd[:2] == ["experiment", "run"]:
        return ["--only", "bce", "--bootstrap", "0", "--no-figures", *TINY]
    if cmd[0] == "predict":
        return ["--chunks", "2"]
    if cmd[0] == "tag":
        return ["--chunks", "2"]
    return []


@pytest.mark.slow
def test_readme_walkthrough_runs_command_for_command(fabricated: dict[str, Path | str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    commands = walkthrough_commands()
    assert [c.split()[1] for c in commands][:3] == ["data", "data", "data"] and len(commands) >= 8
    monkeypatch.chdir(tmp_path)  # the shipped configs read data/mtg-jamendo relative to the working directory
    outputs: dict[str, str] = {}
    errors: dict[str, str] = {}
    for line in commands:
        redirect = None
        if ">" in line:
            line, redirect = (part.strip() for part in line.split(">", 1))
        cmd = shlex.split(line)[1:]
        cmd = [str(fabricated["music"]) if a == "~/Music" else a for a in cmd]
        rc = main([*cmd, *_extra(cmd, fabricated)])
        captured = capsys.readouterr()
        assert rc == 0, f"`{line}` exited {rc}: {captured.err.strip().splitlines()[-1:]}"
        key = " ".join(cmd[:2]) if cmd[0] in ("data", "experiment") else cmd[0]
        outputs[key], errors[key] = captured.out, captured.err
        if redirect:
            (tmp_path / redirect).write_text(captured.out)

    root = tmp_path / "data" / "mtg-jamendo"
    src = Path(fabricated["src"])
    for split in range(5):  # the split files, in the configs' layout
        for part in SUBSETS:
            rel = Path("splits") / f"split-{split}" / f"{DATASET}-{part}.tsv"
            assert (root / rel).read_bytes() == (src / rel).read_bytes()
    assert len(list((root / "audio").rglob("*.low.mp3"))) == fabricated["n_tracks"]
    tars = sorted((Path(str(fabricated["mirror"])) / DATASET / TYPE).glob("*.tar"))
    size = _size(sum(t.stat().st_size for t in tars))
    assert f"2 of 2 archives to fetch, {size}" in errors["data download"]  # said before starting
    assert errors["data download"].count("CC BY-NC-SA 4.0") == 1
    train = read_tracks(src / "splits" / "split-0" / f"{DATASET}-train.tsv")
    assert f"tracks: {len(train):,}" in outputs["data stats"]
    assert "missing files: 0" in outputs["data audit"]
    assert (tmp_path / "runs" / "bce" / "best.pt").is_file() and (tmp_path / "runs" / "focal" / "best.pt").is_file()
    assert "PR-AUC" in outputs["evaluate"] and "ROC-AUC" in outputs["evaluate"]
    assert (tmp_path / "results" / "paper" / "report.md").is_file()
    tags = (tmp_path / "tags.json").read_text()
    first = tags.strip().splitlines()[0]
    assert "song.mp3" in tags and json.loads(tags if first in ("[", "{") else first)  # JSON (or JSON lines)
