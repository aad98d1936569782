"""`--write-tags`: mood values land where players read them, the audio is untouched, bad files are skipped."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

mutagen = pytest.importorskip("mutagen")

from focaltag.cli import main  # noqa: E402
from focaltag.data.tags import MOODTHEME_TAGS, short_tag  # noqa: E402
from focaltag.outputs.filetags import (  # noqa: E402
    MOOD_KEY,
    OTHER_KEY,
    PROBABILITIES_KEY,
    FileTagWriter,
    chosen_tags,
    read_file_tags,
    write_file_tags,
)

FORMATS = {"flac": ("FLAC", None), "ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56, width=8),
                      tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-tag thresholds a random model crosses for some tags and not for others."""
    path = tmp_path_factory.mktemp("thr") / "thresholds.tsv"
    path.write_text("".join(f"{t}\t{0.5 if i % 2 else 0.99}\n" for i, t in enumerate(MOODTHEME_TAGS)))
    return path


def _generated(folder: Path, ext: str, seed: int = 0) -> Path:
    fmt, subtype = FORMATS[ext]
    rng = np.random.default_rng(seed)
    wave = (0.2 * rng.standard_normal((48000, 2))).astype(np.float32)
    path = folder / f"gen{seed}.{ext}"
    sf.write(path, wave, 48000, format=fmt, subtype=subtype)
    return path


def _copy(music_dir: Path, folder: Path, name: str = "traveling_minstrels.low.mp3") -> Path:
    dst = folder / name
    shutil.copyfile(music_dir / name, dst)
    os.chmod(dst, 0o644)
    return dst


def _audio(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0]


def _decisions(result: dict, thresholds: Path) -> list[str]:
    """The expected MOOD values, computed independently: probability > threshold, in tag order."""
    thr = dict(line.split("\t") for line in thresholds.read_text().splitlines())
    return [short_tag(t) for t in MOODTHEME_TAGS if result["tags"][t] > float(thr[t])]


def test_cli_writes_decisions_into_every_container_and_leaves_the_audio(
        music_dir: Path, tiny_model: Path, thresholds: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    # battle-epic.ogg shares its Vorbis setup-header page with audio: the layout mutagen would change
    files = [_generated(lib, ext) for ext in FORMATS] + [_copy(music_dir, lib), _copy(music_dir, lib, "battle-epic.ogg")]
    audio_before = {f: _audio(f) for f in files}
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(lib), "-m", str(tiny_model), "--thresholds", str(thresholds), "--chunks", "2",
                 "-o", str(out), "--write-tags", "-q"]) == 0
    results = {d["file"]: d for d in map(json.loads, out.read_text().splitlines())}
    for f in files:
        expected = _decisions(results[str(f)], thresholds)
        assert expected, "the thresholds should select at least one tag"
        tags = mutagen.File(f).tags
        if f.suffix == ".mp3":
            assert tags.version[:2] == (2, 4) and list(tags["TMOO"].text) == expected
        else:
            assert tags["MOOD"] == expected  # one Vorbis comment per value
        assert np.array_equal(_audio(f), audio_before[f]), f"{f.name}: decoded audio changed"
        # the recorded size/mtime are those after the write: a --refresh run sees nothing changed
        assert results[str(f)]["size"] == f.stat().st_size
    rerun = main(["tag", str(lib), "-m", str(tiny_model), "--thresholds", str(thresholds), "--chunks", "2",
                  "-o", str(out), "--refresh", "-q"])
    assert rerun == 0 and len(out.read_text().splitlines()) == len(files)


def test_id3v23_files_stay_v23_with_txxx_mood(music_dir: Path, tmp_path: Path) -> None:
    from mutagen.id3 import TIT2

    mp3 = _copy(music_dir, tmp_path, "machine_wars.mp3")
    audio = mutagen.File(mp3)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=["Machine Wars"]))
    audio.save(v2_version=3)
    before = _audio(mp3)
    outcome = write_file_tags(mp3, ["dark", "epic"])
    assert outcome.status == "written"
    tags = mutagen.File(mp3).tags
    assert tags.version[:2] == (2, 3)
    assert "TMOO" not in tags and str(tags["TIT2"]) == "Machine Wars"
    assert read_file_tags(mp3) == ["dark", "epic"]
    assert np.array_equal(_audio(mp3), before)


def test_existing_mood_kept_unless_replace_and_rewrite_is_idempotent(tmp_path: Path) -> None:
    flac = _generated(tmp_path, "flac")
    audio = mutagen.File(flac)
    audio["MOOD"] = ["Chill"]
    audio.save()
    assert write_file_tags(flac, ["happy", "calm"]).status == "written"
    assert read_file_tags(flac) == ["Chill", "happy", "calm"]
    assert write_file_tags(flac, ["happy", "calm"]).status == "unchanged"
    assert write_file_tags(flac, ["sad"], replace=True).status == "written"
    assert read_file_tags(flac) == ["sad"]


def test_dry_run_keep_mtime_and_probabilities(tmp_path: Path) -> None:
    ogg = _generated(tmp_path, "ogg")
    os.utime(ogg, (1_500_000_000, 1_500_000_000))
    raw = ogg.read_bytes()
    outcome = write_file_tags(ogg, ["happy"], dry_run=True)
    assert outcome.status == "would write" and outcome.values == ["happy"]
    assert ogg.read_bytes() == raw
    probs = {"mood/theme---happy": 0.8125, "mood/theme---sad": 0.125}
    assert write_file_tags(ogg, ["happy"], probabilities=probs, keep_mtime=True).status == "written"
    assert ogg.stat().st_mtime == 1_500_000_000
    assert json.loads(read_file_tags(ogg, PROBABILITIES_KEY)[0]) == {"happy": 0.8125, "sad": 0.125}


def test_read_only_and_unsupported_files_are_skipped_untouched(tmp_path: Path) -> None:
    flac = _generated(tmp_path, "flac")
    flac.chmod(stat.S_IRUSR | stat.S_IRGRP)
    raw = flac.read_bytes()
    wav = tmp_path / "plain.wav"
    sf.write(wav, np.zeros(1000, dtype=np.float32), 16000)
    try:
        ro = write_file_tags(flac, ["happy"])
        assert ro.status == "skipped" and "read-only" in ro.reason
        assert flac.read_bytes() == raw
    finally:
        flac.chmod(0o644)
    unsupported = write_file_tags(wav, ["happy"])
    assert unsupported.status == "skipped" and "unsupported container" in unsupported.reason


def test_read_only_file_through_the_cli_is_reported(tiny_model: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 16000)
    assert main(["tag", str(wav), "-m", str(tiny_model), "--chunks", "1", "--write-tags", "--top-k", "2"]) == 0
    err = capsys.readouterr().err
    assert f"not writing tags to {wav}: unsupported container" in err
    assert "1 skipped" in err


def test_other_vocabularies_use_focaltag_tags_and_topk_without_thresholds(tmp_path: Path) -> None:
    names = ("guitar", "rock", "piano", "female vocal")
    writer = FileTagWriter(names, top_k=2)
    assert writer.key == OTHER_KEY
    assert FileTagWriter(MOODTHEME_TAGS, top_k=2).key == MOOD_KEY
    flac = _generated(tmp_path, "flac")
    result = SimpleNamespace(file=str(flac), tag_names=names, decisions=None,
                             probabilities=dict(zip(names, (0.2, 0.9, 0.6, 0.1), strict=True)))
    assert writer(result).status == "written"
    assert read_file_tags(flac, OTHER_KEY) == ["rock", "piano"]
    assert read_file_tags(flac, MOOD_KEY) == []
    # a result with decisions: the tagger's decisions are written as they are, never computed again
    decided = SimpleNamespace(**{**vars(result), "decisions": dict(zip(names, (True, False, False, True),
                                                                       strict=True))})
    assert FileTagWriter(names, top_k=2, replace=True)(decided).status == "written"
    assert read_file_tags(flac, OTHER_KEY) == ["guitar", "female vocal"]


def test_chosen_tags_use_the_strict_rule() -> None:
    names = ("mood/theme---a", "mood/theme---b", "mood/theme---c")
    probs = {"mood/theme---a": 0.5, "mood/theme---b": 0.50001, "mood/theme---c": 0.1}
    assert chosen_tags(probs, names, thresholds=np.array([0.5, 0.5, 0.05])) == ["b", "c"]
    assert chosen_tags(probs, names, top_k=2) == ["b", "a"]


def _minimal_m4a(path: Path, payload: bytes) -> None:
    """A bare MP4 audio container (no ffmpeg here): ftyp, moov (mvhd, one 'soun' track, stco -> mdat), mdat."""
    import struct

    def atom(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + name + body

    def full(name: bytes, body: bytes) -> bytes:
        return atom(name, b"\0\0\0\0" + body)

    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = full(b"mvhd", struct.pack(">IIII", 0, 0, 1000, 2000) + struct.pack(">IH", 0x10000, 0x100)
                + b"\0" * 10 + matrix + b"\0" * 24 + struct.pack(">I", 2))
    mdhd = full(b"mdhd", struct.pack(">IIIIHH", 0, 0, 44100, 88200, 0x55C4, 0))
    hdlr = full(b"hdlr", b"\0\0\0\0soun" + b"\0" * 12 + b"\0")
    ftyp = atom(b"ftyp", b"M4A \0\0\0\0M4A mp42isom")

    def moov(offset: int) -> bytes:
        stbl = atom(b"stbl", full(b"stsd", struct.pack(">I", 0)) + full(b"stco", struct.pack(">II", 1, offset)))
        trak = atom(b"trak", atom(b"mdia", mdhd + hdlr + atom(b"minf", stbl)))
        return atom(b"moov", mvhd + trak)

    offset = len(ftyp) + len(moov(0)) + 8
    path.write_bytes(ftyp + moov(offset) + atom(b"mdat", payload))


def _mp4_chunk(path: Path, size: int) -> bytes:
    """The bytes the (single) stco entry points at: the audio data as a player finds it."""
    from mutagen.mp4 import Atoms

    with open(path, "rb") as f:
        atoms = Atoms(f)
        stco = atoms.path(b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stco")[-1]
        ok, data = stco.read(f)
        offset = int.from_bytes(data[8:12], "big")
        f.seek(offset)
        return f.read(size)


def test_mp4_gets_itunes_freeform_mood_and_keeps_its_audio_data(tmp_path: Path) -> None:
    m4a = tmp_path / "song.m4a"
    payload = np.random.default_rng(0).bytes(5000)
    _minimal_m4a(m4a, payload)
    assert _mp4_chunk(m4a, len(payload)) == payload
    assert write_file_tags(m4a, ["happy", "epic"]).status == "written"
    tags = mutagen.File(m4a).tags
    assert [bytes(v).decode() for v in tags["----:com.apple.iTunes:MOOD"]] == ["happy", "epic"]
    assert read_file_tags(m4a) == ["happy", "epic"]
    assert _mp4_chunk(m4a, len(payload)) == payload  # the moov grew, the chunk offset followed, data unchanged


def test_write_tags_on_a_library_tagged_before_uses_the_recorded_probabilities(
        tiny_model: Path, thresholds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [_generated(lib, "flac", seed=i) for i in range(3)]
    raw = {f: f.read_bytes() for f in files}
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "--thresholds", str(thresholds), "--chunks", "1", "-o", str(out)]
    assert main([*argv, "--write-tags", "--dry-run"]) == 0  # a preview: the model runs, nothing is written
    assert all(f.read_bytes() == raw[f] for f in files)
    assert "3 file(s) would change" in capsys.readouterr().err

    assert main([*argv, "--write-tags"]) == 0  # nothing to tag again: the tags come from the recorded lines
    err = capsys.readouterr().err
    assert "0 tagged, 3 skipped" in err and "written to 3 file(s)" in err
    lines = {d["file"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert len(lines) == 3
    for f in files:
        assert read_file_tags(f) == _decisions(lines[str(f)], thresholds)
        assert lines[str(f)]["size"] == f.stat().st_size and lines[str(f)]["mtime"] == f.stat().st_mtime
    assert main([*argv, "--refresh"]) == 0  # the re-recorded size/mtime: our own write is not a change
    assert "0 tagged, 3 skipped" in capsys.readouterr().err


# -- the file stays the file the user knows (issue 22) ------------------------------------------------------
def _nobody() -> tuple[int, int]:
    import grp
    import pwd

    if os.geteuid() != 0:
        pytest.skip("giving a file to nobody:nogroup needs root (chown)")
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody user / nogroup group on this system")


def test_owner_group_mode_and_mtime_are_kept(tmp_path: Path) -> None:
    uid, gid = _nobody()
    flac = _generated(tmp_path, "flac")
    os.chown(flac, uid, gid)
    flac.chmod(0o640)
    os.utime(flac, (1_500_000_000, 1_500_000_000))
    audio, inode = _audio(flac), flac.stat().st_ino
    assert write_file_tags(flac, ["happy"], keep_mtime=True).status == "written"
    st = flac.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o640)
    assert st.st_ino == inode and st.st_mtime == 1_500_000_000
    assert read_file_tags(flac) == ["happy"]
    np.testing.assert_array_equal(_audio(flac), audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == [flac.name]  # no copy left beside it


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    target_dir = tmp_path / "store"
    target_dir.mkdir()
    target = _generated(target_dir, "ogg")
    audio = _audio(target)
    link = tmp_path / "link.ogg"
    link.symlink_to(target)
    assert write_file_tags(link, ["sad"]).status == "written"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_file_tags(target) == ["sad"]
    np.testing.assert_array_equal(_audio(target), audio)
    assert sorted(p.name for p in target_dir.iterdir()) == [target.name]


def test_hard_links_stay_one_file(tmp_path: Path) -> None:
    first = _generated(tmp_path, "flac")
    second = tmp_path / "second.flac"
    os.link(first, second)
    audio = _audio(first)
    assert write_file_tags(first, ["calm"]).status == "written"
    assert first.stat().st_ino == second.stat().st_ino and first.stat().st_nlink == 2
    assert read_file_tags(second) == ["calm"]
    np.testing.assert_array_equal(_audio(second), audio)


_KILLED_WRITE = """
import os, signal, sys
import focaltag.outputs.filetags as ft
def half_written(audio, kind):  # the kill lands mid-write: the file is damaged, the copy is aside
    with open(audio.filename, "r+b") as f:
        f.seek(0)
        f.write(b"\\0" * 4096)
    os.kill(os.getpid(), signal.SIGKILL)
ft._save = half_written
ft.write_file_tags(sys.argv[1], ["happy"])
"""


def test_a_killed_write_is_restored_by_the_next_run(tiny_model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    lib = tmp_path / "lib"
    lib.mkdir()
    flac = _generated(lib, "flac")
    raw, audio = flac.read_bytes(), _audio(flac)
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(flac)], timeout=120)
    assert killed.returncode == -9
    leftovers = [p for p in lib.iterdir() if p.name.startswith(f".{flac.name}.focaltag-backup-")]
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == raw and flac.read_bytes() != raw
    stale = lib / f".{flac.name}.focaltag-999999999"  # the tagged copy of an older version's killed run
    stale.write_bytes(raw)

    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out), "--write-tags",
                 "--top-k", "2"]) == 0
    err = capsys.readouterr().err
    assert f"restored {flac} from the copy a killed run put aside" in err and f"removed {stale}" in err
    assert sorted(p.name for p in lib.iterdir()) == [flac.name]
    assert len(read_file_tags(flac)) == 2
    np.testing.assert_array_equal(_audio(flac), audio)


def _no_space(*_args: object, **_kwargs: object) -> None:
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_exits_1_and_is_listed_in_failures(tiny_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import focaltag.outputs.filetags as ft

    lib = tmp_path / "lib"
    lib.mkdir()
    files = [_generated(lib, "flac", seed=i) for i in range(2)]
    raw = {f: f.read_bytes() for f in files}
    monkeypatch.setattr(ft, "_save", _no_space)  # the disk fills up while mutagen writes
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out), "--write-tags"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "2 failed" in err
    rows = (tmp_path / "tags.jsonl.failures.tsv").read_text().splitlines()
    assert sorted(r.split("\t")[0] for r in rows) == sorted(map(str, files))
    assert all(f.read_bytes() == raw[f] for f in files) and sorted(lib.iterdir()) == sorted(files)
    monkeypatch.undo()  # space again: the rerun retries both and tags them
    assert main(argv) == 0
    assert all(read_file_tags(f) for f in files)
    assert not (tmp_path / "tags.jsonl.failures.tsv").exists()


def test_a_really_full_disk_fails_the_write_and_keeps_the_file(tmp_path: Path) -> None:
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and mount rights (the simulated full disk covers this)")
    try:
        flac = _generated(mount, "flac")
        raw = flac.read_bytes()
        filler = mount / "filler"
        with open(filler, "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        outcome = write_file_tags(flac, ["happy"])
        assert outcome.status == "failed" and "No space left on device" in outcome.reason
        assert flac.read_bytes() == raw
        assert sorted(p.name for p in mount.iterdir()) == ["filler", flac.name]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_failed_write_on_a_recorded_file_is_listed_and_retried(tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import focaltag.outputs.filetags as ft
    from focaltag.library.runs import read_failures

    lib = tmp_path / "lib"
    lib.mkdir()
    flac = _generated(lib, "flac")
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "--chunks", "1", "-o", str(out)]
    assert main(argv) == 0  # tagged into the output only
    monkeypatch.setattr(ft, "_save", _no_space)
    assert main([*argv, "--write-tags"]) == 1  # the tags come from the recorded line; the write fails
    assert "1 failed" in capsys.readouterr().err
    assert [p for p, _ in read_failures(tmp_path / "tags.jsonl.failures.tsv")] == [str(flac)]
    monkeypatch.undo()
    assert main([*argv, "--write-tags"]) == 0 and read_file_tags(flac)
    assert not (tmp_path / "tags.jsonl.failures.tsv").exists()
