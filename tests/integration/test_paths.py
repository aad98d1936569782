"""Any file name the OS holds is tagged, written and read back: non-UTF-8 bytes, tabs, newlines, CR, U+2028.

Also the real cause of unreadable inputs ("permission denied") and folders that cannot be listed going to
failures.tsv and being retried. Every run is the real CLI (``focaltag tag``) in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from focaltag._paths import escape_path, json_line, unescape_path
from focaltag.cli import main
from focaltag.library.runs import failures_path, read_failures

# hostile names as the OS holds them (bytes): Latin-1 from an old disk, every line break a reader may split on
HOSTILE = [b"caf\xe9.wav", b"tab\there.wav", b"new\nline.wav", b"carriage\rreturn.wav", "sep\u2028arator.wav".encode(),
           "par\u2029agraph.wav".encode(), b"nel\xc2\x85.wav", b"back\\x41slash.wav", b"\xff\xfe raw.wav",
           "日本語 Мелодия.wav".encode()]


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", width=8), tmp_path_factory.mktemp("model") / "tiny.pt")


def _tone(path: bytes | str, seconds: float = 1.0, freq: float = 440.0) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(os.fsencode(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


# -- the escaping itself ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "written"), [
    (b"plain/name.mp3", "plain/name.mp3"), (b"caf\xe9.mp3", "caf\\xe9.mp3"), (b"a\tb", "a\\tb"),
    (b"a\nb", "a\\nb"), (b"a\rb", "a\\rb"), ("a\u2028b".encode(), "a\\u2028b"), (b"a\\b", "a\\\\b"),
    ("Мелодия.ogg".encode(), "Мелодия.ogg"), (b"bell\x07", "bell\\x07"), (b"del\x7f", "del\\x7f"),
])
def test_escape_table(raw: bytes, written: str) -> None:
    """The documented table of escape_path, and its reader giving the same bytes back."""
    assert escape_path(_name(raw)) == written
    assert os.fsencode(unescape_path(written)) == raw


def test_every_byte_and_random_names_round_trip() -> None:
    rng = np.random.default_rng(0)
    names = [bytes([b]) for b in range(1, 256) if b != 0x2F] + [
        bytes(rng.integers(1, 256, size=int(rng.integers(1, 40))).astype(np.uint8).tobytes()) for _ in range(2000)]
    for raw in names:
        text = escape_path(_name(raw))
        assert "\t" not in text and "\n" not in text and "\r" not in text and "\u2028" not in text
        assert len(text.splitlines()) <= 1
        text.encode("utf-8")  # printable on any UTF-8 terminal or file
        assert os.fsencode(unescape_path(text)) == raw
        assert os.fsencode(json.loads(json_line({"file": _name(raw)}))["file"]) == raw


# -- the CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def hostile_library(tmp_path: Path) -> Path:
    """One good WAV per hostile name, and one broken file with a hostile name."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, raw in enumerate(HOSTILE):
        _tone(os.path.join(os.fsencode(lib), raw), freq=300.0 + 50 * i)
    (lib / "broken").mkdir()
    with open(os.path.join(os.fsencode(lib / "broken"), b"bad\t\xe9\n.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    return lib


def _all_files(lib: Path) -> set[str]:
    return {os.path.join(folder, f) for folder, _dirs, files in os.walk(str(lib)) for f in files}


def test_hostile_names_tag_resume_and_failures_round_trip(hostile_library: Path, tiny_model: Path,
                                                           tmp_path: Path) -> None:
    lib = hostile_library
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out), "-q"]
    bad = os.path.join(str(lib / "broken"), _name(b"bad\t\xe9\n.wav"))
    assert _run(argv)[0] == 1  # one file failed
    recorded = [json.loads(line)["file"] for line in out.read_bytes().splitlines()]
    assert sorted(recorded) == sorted(_all_files(lib) - {bad})  # every name exactly, as the OS holds it
    assert all(os.path.exists(p) for p in recorded)
    rows = read_failures(failures_path(out))
    assert [p for p, _ in rows] == [bad] and os.path.exists(rows[0][0])
    assert len(failures_path(out).read_bytes().splitlines()) == 1  # one row: nothing in the name split it

    # resume: every recorded name is recognised again; the failed one is retried (and fails again)
    assert _run(argv)[0] == 1
    assert len(out.read_bytes().splitlines()) == len(recorded)
    assert [p for p, _ in read_failures(failures_path(out))] == [bad]

    # once repaired, the retry tags it and failures.tsv goes
    _tone(bad)
    assert _run(argv)[0] == 0
    assert not failures_path(out).exists()
    assert sorted(json.loads(line)["file"] for line in out.read_bytes().splitlines()) == sorted(_all_files(lib))


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_stdout_formats_keep_every_name(hostile_library: Path, tiny_model: Path, fmt: str) -> None:
    shutil.rmtree(hostile_library / "broken")
    rc, text = _run(["tag", str(hostile_library), "-m", str(tiny_model), "--chunks", "1", "--format", fmt, "-q"])
    assert rc == 0
    text.encode("utf-8")
    if fmt == "json":
        names = [obj["file"] for obj in json.loads(text)]
    elif fmt == "table":
        names = [unescape_path(line.split("\t")[0]) for line in text.splitlines()]
    else:
        import csv

        rows = list(csv.reader(io.StringIO(text)))[1:]
        assert all(len(r) == len(rows[0]) for r in rows)
        names = [unescape_path(r[0]) for r in rows]
    assert sorted(names) == sorted(_all_files(hostile_library))


def test_write_tags_on_a_non_utf8_name(tmp_path: Path, tiny_model: Path, music_dir: Path) -> None:
    from focaltag.outputs.filetags import read_file_tags

    lib = tmp_path / "lib"
    lib.mkdir()
    target = os.path.join(str(lib), _name(b"caf\xe9 \xff.mp3"))
    shutil.copyfile(music_dir / "traveling_minstrels.low.mp3", os.fsencode(target))
    out = tmp_path / "tags.jsonl"
    assert _run(["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out), "--write-tags",
                 "--top-k", "2", "-q"])[0] == 0
    line = json.loads(out.read_bytes())
    assert line["file"] == target
    best = [t.split("---")[-1] for t, _ in sorted(line["tags"].items(), key=lambda kv: -kv[1])[:2]]
    assert read_file_tags(target) == best


# -- the real cause: permission denied ----------------------------------------------------------------------
@contextlib.contextmanager
def _denied(monkeypatch: pytest.MonkeyPatch, file: Path, folder: Path) -> Iterator[None]:
    """Make ``file`` unreadable and ``folder`` unlistable: chmod for a normal user; root reads everything, so
    there the OS's answer (EACCES) is given by the two calls the library asks (os.access, os.scandir)."""
    if os.geteuid() != 0:
        os.chmod(file, 0)
        os.chmod(folder, 0)
        try:
            yield
        finally:
            os.chmod(file, 0o644)
            os.chmod(folder, 0o755)
        return
    real_access, real_scandir = os.access, os.scandir

    def access(path: object, mode: int, *a: object, **k: object) -> bool:
        if os.fspath(path) == str(file):  # type: ignore[arg-type]
            return False
        return real_access(path, mode, *a, **k)  # type: ignore[arg-type]

    def scandir(path: object = ".") -> object:
        if os.fspath(path) == str(folder):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(folder))
        return real_scandir(path)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(os, "access", access)
        m.setattr(os, "scandir", scandir)
        yield


def test_permission_denied_and_unlistable_folder_are_reported_and_retried(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "lib"
    (lib / "locked").mkdir(parents=True)
    _tone(lib / "ok.wav")
    _tone(lib / "unreadable.wav")
    _tone(lib / "locked" / "inside.wav")
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out), "-q"]
    with _denied(monkeypatch, lib / "unreadable.wav", lib / "locked"):
        assert _run(argv)[0] == 1
    rows = dict(read_failures(failures_path(out)))
    assert set(rows) == {str(lib / "unreadable.wav"), str(lib / "locked")}
    assert "permission denied" in rows[str(lib / "unreadable.wav")]
    assert "corrupt" not in rows[str(lib / "unreadable.wav")]
    assert "cannot list the folder: permission denied" in rows[str(lib / "locked")]
    assert [json.loads(x)["file"] for x in out.read_text().splitlines()] == [str(lib / "ok.wav")]
    # readable again: the next run retries both (the folder is walked) and the failures file goes
    assert _run(argv)[0] == 0
    assert not failures_path(out).exists()
    assert sorted(json.loads(x)["file"] for x in out.read_text().splitlines()) == sorted(
        str(p) for p in (lib / "ok.wav", lib / "unreadable.wav", lib / "locked" / "inside.wav"))
