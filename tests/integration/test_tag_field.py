"""`--tag-field`: tags go to the field the user names, in each container's own frame, and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

mutagen = pytest.importorskip("mutagen")

from _encode import FORMATS, encode  # noqa: E402

from focaltag.errors import ConfigError  # noqa: E402
from focaltag.outputs.filetags import FileTagWriter, read_file_tags, tag_field, write_file_tags  # noqa: E402

VALUES = ["warm-up", "peak time"]
ENCODED = {f.name: f for f in FORMATS}


def _wave() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((48000, 2))).astype(np.float32)


def make(folder: Path, kind: str) -> Path:
    """A 1 s file of ``kind`` (flac and ogg by libsndfile, mp3 and m4a by FFmpeg's encoders)."""
    if kind in ("flac", "ogg"):
        path = folder / f"a.{kind}"
        sf.write(path, _wave(), 48000, format=kind.upper(), subtype=None if kind == "flac" else "VORBIS")
        return path
    fmt = ENCODED["mp3" if kind == "mp3" else "aac-m4a"]
    return encode(_wave(), 48000, folder / f"a{fmt.ext}", fmt)


# what each field is called inside each container, read with mutagen directly (not with focaltag's reader)
RAW = {
    ("mp3", "GROUPING"): lambda t: list(t["TIT1"].text),
    ("mp3", "COMMENT"): lambda t: list(t["COMM::eng"].text),
    ("mp3", "FOCALTAG_TAGS"): lambda t: list(t["TXXX:FOCALTAG_TAGS"].text),
    ("m4a", "GROUPING"): lambda t: list(t["\xa9grp"]),
    ("m4a", "COMMENT"): lambda t: list(t["\xa9cmt"]),
    ("m4a", "FOCALTAG_TAGS"): lambda t: [bytes(v).decode() for v in t["----:com.apple.iTunes:FOCALTAG_TAGS"]],
    ("flac", "GROUPING"): lambda t: t["GROUPING"],
    ("flac", "COMMENT"): lambda t: t["COMMENT"],
    ("flac", "FOCALTAG_TAGS"): lambda t: t["FOCALTAG_TAGS"],
    ("ogg", "GROUPING"): lambda t: t["GROUPING"],
}


def keys(path: Path) -> set[str]:
    tags = mutagen.File(path).tags
    # .keys(): iterating a Vorbis comment block gives (key, value) pairs, not keys
    return set() if tags is None else {str(k).upper() for k in tags.keys()}  # noqa: SIM118


@pytest.mark.parametrize(("kind", "field"), sorted(RAW))
def test_the_named_field_gets_the_values_and_nothing_else_changes(tmp_path: Path, kind: str, field: str):
    path = make(tmp_path, kind)
    before = keys(path)
    outcome = write_file_tags(path, VALUES, key=tag_field(field.lower()))
    assert outcome.status == "written", outcome.line()
    assert RAW[(kind, field)](mutagen.File(path).tags) == VALUES
    added = keys(path) - before
    assert len(added) == 1 and "MOOD" not in keys(path) and "TMOO" not in keys(path)
    assert read_file_tags(path, field) == VALUES
    assert write_file_tags(path, VALUES, key=field).status == "unchanged"


def test_an_existing_itunes_comment_is_kept_beside_ours(tmp_path: Path):
    from mutagen.id3 import COMM, Encoding

    path = make(tmp_path, "mp3")
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.add(COMM(encoding=Encoding.UTF8, lang="eng", desc="iTunNORM", text=["0000"]))
    audio.save()
    assert write_file_tags(path, VALUES, key="COMMENT", replace=True).status == "written"
    tags = mutagen.File(path).tags
    assert list(tags["COMM:iTunNORM:eng"].text) == ["0000"] and list(tags["COMM::eng"].text) == VALUES


def test_id3v23_files_keep_v23_with_grouping_values_joined(tmp_path: Path):
    path = make(tmp_path, "mp3")
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    audio.save(v2_version=3)
    assert write_file_tags(path, VALUES, key="GROUPING").status == "written"
    tags = mutagen.File(path).tags
    assert tags.version[:2] == (2, 3) and list(tags["TIT1"].text) == ["warm-up; peak time"]
    assert read_file_tags(path, "GROUPING") == VALUES


def test_field_names_are_checked_and_the_writer_takes_the_named_key():
    assert tag_field(" grouping ") == "GROUPING" and tag_field("my_crates") == "MY_CRATES"
    for bad in ("", "a=b", "tab\there", "\u00e9t\u00e9"):
        with pytest.raises(ConfigError, match="--tag-field"):
            tag_field(bad)
    assert FileTagWriter(["happy", "sad"], top_k=1, key="grouping").key == "GROUPING"
    assert FileTagWriter(["happy", "sad"], top_k=1).key == "MOOD"  # mood words without a field: MOOD
