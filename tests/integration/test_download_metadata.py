"""`data download --tagset T --metadata-only` against a loopback mirror holding the REAL split files: byte-for-byte
copies in the configs' layout, one altered byte refused with nothing under the final name, the pins themselves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _mirror_server import serve_mirror, tree_files

from focaltag.cli import main
from focaltag.data.dataset import TAGSETS, open_dataset
from focaltag.data.mtg_jamendo import LICENCE_NOTICE, MIRROR_ENV, pins, split_files_of
from focaltag.data.pinned import git_blob_sha1

REPO, COMMIT = "MTG/mtg-jamendo-dataset", "1b4fa8c32e076c73b5175c1703ae805b4109309d"


def _serve_real(m, mtg_dir: Path, tagset: str) -> list[str]:
    """Put the real split files of ``tagset`` on the mirror under their repository paths."""
    keys = []
    for f in split_files_of(tagset):
        keys.append(m.add(REPO, COMMIT, f.path, (mtg_dir / f.local).read_bytes()))
    return keys


def test_pins_are_the_real_files_blob_ids(mtg_dir: Path) -> None:
    repo, commit, files = pins()
    assert (repo, commit) == (REPO, COMMIT)
    for tagset in TAGSETS:
        assert len(split_files_of(tagset)) == 15  # five splits x train/validation/test
    checked = 0
    for f in files.values():
        local = mtg_dir / f.local
        if local.is_file():
            assert git_blob_sha1(local) == f.blob and local.stat().st_size == f.size, f.path
            checked += 1
    assert checked == len(files)
    # the blob id is git's own: `git hash-object` agrees where git is installed
    one = mtg_dir / split_files_of("genre")[0].local
    try:
        out = subprocess.run(["git", "hash-object", str(one)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert out.strip() == split_files_of("genre")[0].blob


def test_genre_metadata_byte_for_byte_then_idempotent(mtg_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mtg"
    with serve_mirror() as m:
        keys = _serve_real(m, mtg_dir, "genre")
        assert main(["data", "download", "--tagset", "genre", "--metadata-only", "--metadata-mirror", m.url,
                     "--out", str(root)]) == 0
        err = capsys.readouterr().err
        assert err.count(LICENCE_NOTICE) == 1  # the licence, once
        total = sum(len(m.files[k]) for k in keys)
        assert f"15 of 15 pinned files to fetch, {total / 2**20:.1f} MiB" in err  # size said before starting
        for f in split_files_of("genre"):
            assert (root / f.local).read_bytes() == (mtg_dir / f.local).read_bytes()
        assert tree_files(root) == sorted(f.local for f in split_files_of("genre"))  # no .part, no audio
        n = len(m.requests)
        assert main(["data", "download", "--tagset", "genre", "--metadata-only", "--metadata-mirror", m.url,
                     "--out", str(root), "-q"]) == 0
        assert len(m.requests) == n  # verified copies are not fetched again
    # exactly the layout the configs and --dataset-dir read
    ds = open_dataset(root, tagset="genre", split=3)
    assert len(ds.vocabulary()) == 87 and ds.files["test"] == root / "splits/split-3/autotagging_genre-test.tsv"


def test_one_altered_byte_is_refused(mtg_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "mtg"
    with serve_mirror() as m:
        keys = _serve_real(m, mtg_dir, "genre")
        bad = keys[4]
        m.faults[bad] = "flip"  # one byte changed in the middle of the file
        monkeypatch.setenv(MIRROR_ENV, m.url)  # the mirror through the environment this time
        rc = main(["data", "download", "--tagset", "genre", "--metadata-only", "--out", str(root), "-q"])
        err = capsys.readouterr().err
    assert rc == 2  # DownloadError: the input (the mirror's file) is bad
    errors = [line for line in err.splitlines() if line.startswith("focaltag: error:")]
    assert len(errors) == 1 and "wrong bytes" in errors[0] and "Traceback" not in err
    local = bad.split(f"{COMMIT}/data/", 1)[1]
    assert not (root / local).exists()
    assert not [p for p in tree_files(root) if p.endswith((".part", ".tmp"))]


def test_json_dry_run_lists_the_pinned_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "--tagset", "instrument", "--metadata-only", "--dry-run", "--json", "-q",
                 "--out", str(tmp_path / "x")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] and len(out["metadata"]["to_fetch"]) == 15
    assert out["metadata"]["bytes"] == sum(f.size for f in split_files_of("instrument"))
    assert not (tmp_path / "x").exists()
