"""Split audit on a tiny hand-made split: duplicates by hashing files, leakage, missing files, untagged tracks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from focaltag.cli import main
from focaltag.data.audit import audit_split
from focaltag.errors import DataError

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def _split(root: Path) -> Path:
    rows = {
        "train": [("t1", "01/1.mp3", "mood/theme---happy"), ("t2", "02/2.mp3", "mood/theme---sad"),
                  ("t3", "03/3.mp3", "mood/theme---happy")],
        "validation": [("v1", "04/4.mp3", "mood/theme---sad"), ("v2", "05/5.mp3", "")],
        "test": [("x1", "06/6.mp3", "mood/theme---happy"), ("x2", "07/7.mp3", "genre---rock")],
    }
    folder = root / "split-0"
    folder.mkdir(parents=True)
    for subset, items in rows.items():
        lines = [HEADER] + [f"{i}\ta\tb\t{p}\t60.0\t{t}" for i, p, t in items]
        (folder / f"autotagging_moodtheme-{subset}.tsv").write_text("\r\n".join(lines) + "\r\n")
    audio = root / "audio"
    content = {"01/1.mp3": b"A", "02/2.low.mp3": b"B", "03/3.mp3": b"A", "04/4.mp3": b"C", "05/5.mp3": b"C",
               "06/6.low.mp3": b"B"}  # 07/7.mp3 is missing
    for rel, data in content.items():
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio / rel).write_bytes(data * 1000)
    return folder


def test_audit_by_hashing_audio(tmp_path: Path) -> None:
    folder = _split(tmp_path)
    r = audit_split(folder, audio_dir=tmp_path / "audio")
    # groups: {t1, t3} (train only), {t2, x1} (train/test leak, via .low.mp3 names), {v1, v2} (validation)
    assert r["duplicate_groups"] == 3 and r["duplicate_tracks"] == 6 and r["redundant_tracks"] == 3
    assert r["cross_split_groups"] == 1
    assert [m["track_id"] for m in r["cross_split"][0]["tracks"]] == ["t2", "x1"]
    assert r["cross_split"][0]["subsets"] == ["train", "test"]
    assert r["n_missing_files"] == 1 and r["missing_files"][0]["track_id"] == "x2"
    # vocabulary = train tags (happy, sad): v2 has no tag, x2 only an out-of-vocabulary tag
    assert [u["track_id"] for u in r["untagged"]] == ["v2", "x2"]
    assert r["n_unhashed"] == 1 and r["hash_source"] == "+audio"


def test_audit_with_manifest_maps_low_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _split(tmp_path)
    digest = hashlib.sha256(b"same").hexdigest()
    manifest = tmp_path / "tracks.txt"
    manifest.write_text(f"{digest} 01/1.low.mp3\n{digest} 06/6.low.mp3\n{'b' * 64} 02/2.low.mp3\n")
    assert main(["data", "audit", "--split-dir", str(folder), "--manifest", str(manifest), "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["duplicate_groups"] == 1 and r["cross_split_groups"] == 1 and r["n_unhashed"] == 4
    assert r["n_missing_files"] is None
    assert main(["data", "audit", "--split-dir", str(folder), "--manifest", str(manifest), "-q"]) == 0
    out = capsys.readouterr().out
    assert "cross-split groups (leakage): 1 involving 2 tracks" in out and "LEAK" in out


def test_audit_needs_hashes(tmp_path: Path) -> None:
    folder = _split(tmp_path)
    with pytest.raises(DataError, match="pass a tracks manifest"):
        audit_split(folder)
    with pytest.raises(DataError, match="audio folder not found"):
        audit_split(folder, audio_dir=tmp_path / "nope")
