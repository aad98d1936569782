"""``focaltag data stats`` and ``focaltag data audit`` on the shared official MTG-Jamendo files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import main

TRAIN = Path("splits") / "split-0" / "autotagging_moodtheme-train.tsv"


def _json(capsys: pytest.CaptureFixture[str], argv: list[str], rc: int = 0) -> dict:
    assert main(argv) == rc
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints exactly one JSON object"
    return json.loads(out)


def test_split0_train_figures(mtg_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _json(capsys, ["data", "stats", "--tsv", str(mtg_dir / TRAIN), "--json", "-q"])
    assert s["n_tracks"] == 9949 and s["n_tags"] == 56
    assert round(s["imbalance_factor"], 1) == 15.7
    assert s["most_frequent"] == {"tag": "mood/theme---happy", "count": 927}
    assert s["least_frequent"] == {"tag": "mood/theme---sexy", "count": 59}
    assert sum(len(v) for v in s["groups"].values()) == 56 == len(s["tag_counts"])
    assert all(s["tag_counts"][t] > 550 for t in s["groups"]["head"])
    assert all(s["tag_counts"][t] <= 200 for t in s["groups"]["tail"])
    # paper footnote 2: christmas and holiday have the highest label correlation, rho = .43
    best = s["top_correlation"][0]
    assert best["tags"] == ["mood/theme---christmas", "mood/theme---holiday"]
    assert round(best["correlation"], 2) == 0.43
    assert s["duration"]["n_tracks"] == 9949 and s["tags_per_track"]["min"] >= 1


def test_split0_plus_music4all_figures_and_stacked_plot(mtg_dir: Path, reference_predictions_dir: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    m4a = reference_predictions_dir / "train-splits" / "m4a_moodtheme-train.tsv"
    plot = tmp_path / "fig2.png"
    s = _json(capsys, ["data", "stats", "--tsv", str(mtg_dir / TRAIN), "--tsv", str(m4a), "--label", "Jamendo",
                       "--label", "Music4All", "--plot", str(plot), "--json", "-q"])
    assert s["n_tracks"] == 9949 + 5666 and s["n_tags"] == 56
    assert round(s["imbalance_factor"], 1) == 24.1
    assert s["most_frequent"] == {"tag": "mood/theme---love", "count": 1636}
    assert s["least_frequent"] == {"tag": "mood/theme---fast", "count": 68}
    assert s["group_sizes"] == {"head": 14, "middle": 27, "tail": 15}
    src = s["sources"]
    assert src["Jamendo"]["n_tracks"] == 9949 and src["Music4All"]["n_tracks"] == 5666
    for tag, n in s["tag_counts"].items():
        assert src["Jamendo"]["tag_counts"][tag] + src["Music4All"]["tag_counts"][tag] == n
    _check_png(plot)


def test_text_output_and_single_plot(mtg_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "fig1.png"
    assert main(["data", "stats", "--tsv", str(mtg_dir / TRAIN), "--plot", str(plot), "-q"]) == 0
    out = capsys.readouterr().out
    assert "imbalance factor: 15.7 (most happy 927 / least sexy 59)" in out
    assert "christmas + holiday: r = 0.433" in out
    _check_png(plot)


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[1] > 1000 and img.shape[0] > 400  # wide enough for 56 readable labels
    assert np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 20  # bars, text, not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))


def test_stats_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("TRACK_ID\tPATH\tTAGS\nt1\ta.mp3\tmood/theme---happy\nt2\tb.mp3\n")
    assert main(["data", "stats", "--tsv", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.tsv line 3" in err and "no tags" in err
    assert main(["data", "stats", "--tsv", str(tmp_path / "missing.tsv")]) == 2
    assert "metadata file not found" in capsys.readouterr().err


def test_audit_shared_split0_with_audio_low_manifest(mtg_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = mtg_dir / "download" / "autotagging_moodtheme_audio-low_sha256_tracks.txt"
    r = _json(capsys, ["data", "audit", "--split-dir", str(mtg_dir / "splits" / "split-0"), "--manifest",
                       str(manifest), "--json", "-q"])
    assert r["n_tracks"] == {"train": 9949, "validation": 3802, "test": 4231}
    assert r["n_hashed"] == 17982 and r["n_unhashed"] == 0 and r["n_untagged"] == 0
    # independent count: group the manifest's hashes of the split's paths (48/948.low.mp3 <-> 48/948.mp3)
    sha = {}
    for line in manifest.read_text().splitlines():
        digest, name = line.split()
        sha[name.replace(".low.mp3", ".mp3")] = digest
    owners: dict[str, list[str]] = {}
    for subset in ("train", "validation", "test"):
        rows = (mtg_dir / "splits" / "split-0" / f"autotagging_moodtheme-{subset}.tsv").read_text().splitlines()
        for row in rows[1:]:
            owners.setdefault(sha[row.split("\t")[3]], []).append(subset)
    groups = [v for v in owners.values() if len(v) > 1]
    assert r["duplicate_groups"] == len(groups) > 0
    assert r["duplicate_tracks"] == sum(len(v) for v in groups)
    assert r["cross_split_groups"] == sum(len(set(v)) > 1 for v in groups) == len(r["cross_split"])
    assert all(len({m["subset"] for m in g["tracks"]}) > 1 for g in r["cross_split"])
    assert main(["data", "audit", "--split-dir", str(mtg_dir), "--manifest", str(manifest), "-q",
                 "--fail-on-issues"]) == 1
    assert f"duplicate groups: {len(groups)}" in capsys.readouterr().out
