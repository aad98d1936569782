"""`data synth` writes five splits like the official layout, and a cross-validated grid (`experiment run paper
--preset demo --splits 0,1`, made tiny) runs on them and reports mean ± std across splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from focaltag.cli import main
from focaltag.data.dataset import open_dataset
from focaltag.data.metadata import SUBSETS
from focaltag.data.synth import synthesize_dataset


def test_synth_writes_five_artist_separated_splits(synth_dataset: Path) -> None:
    ids = None
    layouts = []
    for split in range(5):
        ds = open_dataset(synth_dataset, split=split)
        parts = {p: ds.tracks(p) for p in SUBSETS}
        artists = [{r.artist_id for r in recs} for recs in parts.values()]
        assert not (artists[0] & artists[1] or artists[0] & artists[2] or artists[1] & artists[2])
        all_ids = sorted(r.track_id for recs in parts.values() for r in recs)
        assert ids is None or all_ids == ids  # the same tracks, partitioned again
        ids = all_ids
        assert len(ds.vocabulary()) == 56  # every tag is in train in every split: one vocabulary
        layouts.append(tuple(sorted(r.track_id for r in parts["test"])))
    assert len(set(layouts)) == 5  # five different partitions


@pytest.mark.slow
def test_cross_validated_demo_grid_on_two_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cv"
    synthesize_dataset(out / "data", n_tracks=80, seed=1, min_duration=5.0, max_duration=5.5, workers=1)
    tiny = ["--set", "model.width=4", "--set", "optim.epochs=1", "--set", "optim.adam_epochs=1",
            "--set", "runtime.max_steps_per_epoch=2", "--set", "validation.n_chunks=1",
            "--set", "data.prepare_workers=1"]
    assert main(["experiment", "run", "paper", "--preset", "demo", "--splits", "0,1", "--only", "bce", "focal",
                 "--out", str(out), "--bootstrap", "0", "--no-figures", "-q", *tiny]) == 0
    report = capsys.readouterr().out
    for split in (0, 1):
        for run in ("bce", "focal"):
            assert (out / f"split-{split}" / "runs" / run / "DONE").is_file()
    results = json.loads((out / "results.json").read_text())
    cv = results["cv"]
    assert cv["splits"] == [0, 1]
    for run in ("bce", "focal"):
        pr = cv["systems"][run]["PR-AUC-macro"]
        assert pr["n"] == 2 and len(pr["values"]) == 2 and pr["std"] >= 0
    assert "mean ± std (2 splits)" in report
