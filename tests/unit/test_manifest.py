"""SHA-256 manifest parsing and the audio-low name mapping."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from focaltag.data.manifest import manifest_files, metadata_path, parse_manifest, read_manifest, sha256_file
from focaltag.errors import DataError

H1, H2 = "a" * 64, "0123456789abcdef" * 4


def test_parse_official_and_sha256sum_styles() -> None:
    lines = [f"{H1} autotagging_moodtheme_audio-low-00.tar", "", "# comment", f"{H2.upper()}  *00/948.low.mp3"]
    assert parse_manifest(lines) == {"autotagging_moodtheme_audio-low-00.tar": H1, "00/948.low.mp3": H2}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("abc 00/1.mp3", "expected 'SHA256 NAME'"),
        (H1, "expected 'SHA256 NAME'"),
        (f"{H1} ../evil.tar", "unsafe file name"),
        (f"{H1} /etc/passwd", "unsafe file name"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "m.txt"
    path.write_text(f"{H2} ok.tar\n{line}\n")
    with pytest.raises(DataError) as info:
        read_manifest(path)
    assert f"{path} line 2" in str(info.value) and fragment in str(info.value)


def test_conflicting_duplicate_and_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="line 2: x.tar is listed twice"):
        parse_manifest([f"{H1} x.tar", f"{H2} x.tar"])
    assert parse_manifest([f"{H1} x.tar", f"{H1} x.tar"]) == {"x.tar": H1}
    (tmp_path / "e.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match="no entries"):
        read_manifest(tmp_path / "e.txt")
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "missing.txt")


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_names() -> None:
    assert metadata_path("48/948.low.mp3") == "48/948.mp3"
    assert metadata_path("48/948.mp3") == "48/948.mp3"
    tars, tracks = manifest_files("d", "autotagging_moodtheme", "audio-low")
    assert tars.name == "autotagging_moodtheme_audio-low_sha256_tars.txt"
    assert tracks.name == "autotagging_moodtheme_audio-low_sha256_tracks.txt"


def test_official_manifests_parse(mtg_dir: Path) -> None:
    d = mtg_dir / "download"
    for data_type in ("audio", "audio-low", "melspecs"):
        tars = read_manifest(manifest_files(d, "autotagging_moodtheme", data_type)[0])
        assert len(tars) == 100
        assert list(tars)[0] == f"autotagging_moodtheme_{data_type}-00.tar"
    tracks = read_manifest(manifest_files(d, "autotagging_moodtheme", "audio-low")[1])
    assert len(tracks) == 18486 and all(n.endswith(".low.mp3") for n in tracks)
