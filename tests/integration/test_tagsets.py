"""All four MTG-Jamendo tag sets through `--dataset-dir DIR --tagset T --split N --part P`: `data stats --json`
equals a count done here from the raw files, for every tag set; audit and prepare take the same options."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from focaltag.cli import main
from focaltag.data.dataset import TAGSETS

# split-0 train of each tag set: tracks, tags, imbalance factor (the published figures)
KNOWN = {"genre": (32572, 87, 218.1), "instrument": (14395, 40, 61.4), "top50tags": (32136, 50, 20.1),
         "moodtheme": (9949, 56, 15.7)}


def _count(path: Path) -> tuple[int, int, float, Counter[str]]:
    """Tracks, tags, imbalance and tag counts of a split file, counted with nothing but str.split."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()[1:] if ln.strip()]
    counts: Counter[str] = Counter()
    for ln in lines:
        counts.update({t.strip() for t in ln.split("\t")[5:] if t.strip()})
    return len(lines), len(counts), max(counts.values()) / min(counts.values()), counts


def _stats(capsys: pytest.CaptureFixture[str], root: Path, tagset: str, split: int, part: str) -> dict:
    assert main(["data", "stats", "--dataset-dir", str(root), "--tagset", tagset, "--split", str(split),
                 "--part", part, "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("tagset", TAGSETS)
def test_stats_equal_an_independent_count(mtg_dir: Path, capsys: pytest.CaptureFixture[str], tagset: str) -> None:
    for split, part in ((0, "train"), (2, "test")):
        stats = _stats(capsys, mtg_dir, tagset, split, part)
        n, n_tags, imbalance, counts = _count(mtg_dir / "splits" / f"split-{split}" / f"autotagging_{tagset}-{part}.tsv")
        assert stats["n_tracks"] == n
        assert stats["n_tags"] == n_tags  # the vocabulary: the tags of the tag set's split files
        assert stats["imbalance_factor"] == pytest.approx(imbalance, abs=1e-4)
        assert stats["tag_counts"] == dict(counts)
        assert stats["dataset"] == {"root": str(mtg_dir), "kind": "mtg", "tagset": tagset, "split": split,
                                    "part": part}
        if (split, part) == (0, "train"):
            assert (n, n_tags, round(imbalance, 1)) == KNOWN[tagset]


def test_audit_of_a_tagset_split_checks_all_three_parts(mtg_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "audit", "--dataset-dir", str(mtg_dir), "--tagset", "instrument", "--split", "1",
                 "--json", "-q", "--manifest", str(mtg_dir / "download" /
                                                   "autotagging_moodtheme_audio-low_sha256_tracks.txt")]) == 0
    r = json.loads(capsys.readouterr().out)
    for part in ("train", "validation", "test"):
        n, n_tags, _, _ = _count(mtg_dir / "splits" / "split-1" / f"autotagging_instrument-{part}.tsv")
        assert r["n_tracks"][part] == n and r["n_tags"] == n_tags
    assert r["artists_in_several_subsets"] == {}  # the official splits keep artists apart
    assert r["dataset"]["tagset"] == "instrument" and r["dataset"]["split"] == 1


def test_bad_tagset_options_are_one_line(mtg_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "--dataset-dir", str(tmp_path), "--tagset", "genre", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "focaltag data download --tagset genre --metadata-only" in err
    assert main(["data", "stats", "--tsv", str(tmp_path / "x.tsv"), "--tagset", "genre", "-q"]) == 2
    assert "--dataset-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "stats", "--dataset-dir", str(mtg_dir), "--tagset", "moods"])


@pytest.mark.parametrize("tagset", TAGSETS)
def test_every_split_of_every_tagset_resolves_for_training(mtg_dir: Path, tagset: str) -> None:
    """What `experiment run ... --splits 0,1,2,3,4` reads for each split: the official files, one vocabulary."""
    from focaltag.training.config import DataConfig
    from focaltag.training.data import dataset_of, part_files

    vocabularies = set()
    for split in range(5):
        cfg = DataConfig(dataset_dir=mtg_dir, tagset=tagset, split=split)
        files = part_files(cfg)
        for part in ("train", "validation", "test"):
            assert files[part] == mtg_dir / "splits" / f"split-{split}" / f"autotagging_{tagset}-{part}.tsv"
        vocabularies.add(dataset_of(cfg).vocabulary().tags)
    assert len(vocabularies) == 1
