"""The runner's bookkeeping with training and prediction replaced by fast fakes: skip finished runs, resume
killed ones, redo a run whose DONE marker is gone, keep going after one failed run, cross-validation."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from focaltag.data.metadata import OFFICIAL_COLUMNS, TagVocabulary, read_tracks
from focaltag.errors import ConfigError, DataError
from focaltag.experiments import runner
from focaltag.experiments.spec import parse_experiment

TAGS = [f"mood/theme---{t}" for t in ("calm", "dark", "epic", "happy", "sad", "space")]


def _write_split(root: Path, split: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "splits" / f"split-{split}"
    folder.mkdir(parents=True)
    for subset, n in (("train", 40), ("validation", 20), ("test", 24)):
        rows = ["\t".join(OFFICIAL_COLUMNS)]
        for i in range(n):
            k = 1 + int(rng.integers(2))
            tags = [TAGS[(i + j * 2) % len(TAGS)] for j in range(k)]
            rows.append("\t".join([f"{subset}{i}", "a", "b", f"00/{subset}{i}.mp3", "10.0", *tags]))
        (folder / f"autotagging_moodtheme-{subset}.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for split in (0, 1):
        _write_split(root, split, seed=split)
    return root


class Fakes:
    """Stand-ins for training and prediction that record every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []  # (split-N/name, "train", resume)
        self.fail: set[str] = set()
        self.interrupt: set[str] = set()

    def train(self, config, run_dir: Path, *, resume: bool) -> None:
        key = f"{run_dir.parent.parent.name}/{run_dir.name}"
        self.calls.append((key, "train", resume))
        if run_dir.name in self.fail:
            raise DataError(f"cannot decode the audio of {run_dir.name}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "last.pt").write_bytes(b"state")
        if run_dir.name in self.interrupt:
            self.interrupt.discard(run_dir.name)
            raise KeyboardInterrupt
        (run_dir / "best.pt").write_bytes(b"model")
        rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_pr_auc": 0.2 + 0.1 * e}
                for e in (1, 2, 3)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def predict(self, run_dir: Path, tsv: Path, config, *, n_chunks: int, batch_size: int):
        self.calls.append((f"{run_dir.parent.parent.name}/{run_dir.name}", f"predict-{n_chunks}", False))
        gt = TagVocabulary(TAGS).encode(read_tracks(tsv))
        rng = np.random.default_rng(zlib.crc32(run_dir.name.encode()))
        return (0.4 * gt + 0.6 * rng.random(gt.shape)).astype(np.float32), list(TAGS)

    def trained(self) -> list[str]:
        return [k for k, what, _ in self.calls if what == "train"]


@pytest.fixture
def fakes(monkeypatch) -> Fakes:
    f = Fakes()
    monkeypatch.setattr(runner, "_train", f.train)
    monkeypatch.setattr(runner, "_predict", f.predict)
    return f


def _spec(dataset: Path, **extra):
    data = {
        "name": "micro",
        "base": {"data": {"dataset_dir": str(dataset)}, "optim": {"epochs": 1}},
        "runs": {"bce": {"loss": "bce"}, "focal": {"loss": "focal"}},
        "ensembles": {"ensemble": ["bce", "focal"]},
        "tables": {"table1": {"kind": "metrics", "title": "Table I", "systems": ["bce", "focal", "ensemble"]},
                   "table2": {"kind": "groups", "title": "Table II", "systems": ["bce", "focal", "ensemble"]},
                   "table4": {"kind": "ranking", "title": "Table IV", "systems": ["ensemble", "bce", "focal"]}},
        "evaluation": {"bootstrap": 20, "group_thresholds": "auto"},
    }
    data.update(extra)
    return parse_experiment(data)


def test_grid_runs_and_rerun_skips_finished(dataset, fakes, tmp_path):
    out = tmp_path / "exp"
    result = runner.run_experiment(_spec(dataset), out)
    assert fakes.trained() == ["split-0/bce", "split-0/focal"]
    assert ("split-0/bce", "predict-16", False) in fakes.calls and ("split-0/bce", "predict-32", False) in fakes.calls
    assert result.trained == ["split-0/bce", "split-0/focal"] and not result.failed
    text = (out / "report.md").read_text()
    for needle in ("## Table I", "## Table II", "## Table IV", "| Ensemble |", "ΔPR-AUC vs BCE Loss"):
        assert needle in text
    assert np.load(out / "split-0" / "ground_truth" / "test.npy").shape == (24, 6)
    results = json.loads((out / "results.json").read_text())
    assert set(results["systems"]) == {"bce", "focal", "ensemble"}
    assert any(f.endswith("validation_curves.png") for f in results["figures"])

    fakes.calls.clear()
    again = runner.run_experiment(_spec(dataset), out, figures=False)
    assert fakes.trained() == [] and again.skipped == ["split-0/bce", "split-0/focal"]
    assert again.results["systems"]["bce"]["metrics"] == result.results["systems"]["bce"]["metrics"]


def test_deleting_done_redoes_only_that_run(dataset, fakes, tmp_path):
    out = tmp_path / "exp"
    runner.run_experiment(_spec(dataset), out, figures=False)
    (out / "split-0" / "runs" / "focal" / "DONE").unlink()
    fakes.calls.clear()
    result = runner.run_experiment(_spec(dataset), out, figures=False)
    assert fakes.trained() == ["split-0/focal"]
    assert ("split-0/focal", "train", True) in fakes.calls  # resumed from its last.pt
    assert result.skipped == ["split-0/bce"] and result.trained == ["split-0/focal"]
    assert (out / "split-0" / "runs" / "focal" / "DONE").is_file()


def test_interrupted_run_resumes_and_finished_ones_are_kept(dataset, fakes, tmp_path):
    out = tmp_path / "exp"
    fakes.interrupt.add("focal")
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(_spec(dataset), out, figures=False)
    assert (out / "split-0" / "runs" / "bce" / "DONE").is_file()
    assert not (out / "split-0" / "runs" / "focal" / "DONE").exists()
    fakes.calls.clear()
    result = runner.run_experiment(_spec(dataset), out, figures=False)
    assert fakes.trained() == ["split-0/focal"] and ("split-0/focal", "train", True) in fakes.calls
    assert result.skipped == ["split-0/bce"]
    assert "| Ensemble |" in result.report_text


def test_only_trains_the_named_runs(dataset, fakes, tmp_path):
    result = runner.run_experiment(_spec(dataset), tmp_path / "exp", only=["focal"], figures=False)
    assert fakes.trained() == ["split-0/focal"]
    assert "Runs not finished (left out): bce" in result.report_text
    with pytest.raises(ConfigError, match="--only 'nope'"):
        runner.run_experiment(_spec(dataset), tmp_path / "exp", only=["nope"], figures=False)


def test_failed_run_is_reported_and_the_rest_continues(dataset, fakes, tmp_path):
    fakes.fail.add("bce")
    result = runner.run_experiment(_spec(dataset), tmp_path / "exp", figures=False)
    assert len(result.failed) == 1 and result.failed[0].startswith("split-0/bce: cannot decode")
    assert result.trained == ["split-0/focal"]
    assert "| Focal Loss |" in result.report_text and "| Ensemble |" not in result.report_text


def test_changed_config_of_a_finished_run_is_an_error(dataset, fakes, tmp_path):
    out = tmp_path / "exp"
    runner.run_experiment(_spec(dataset), out, figures=False)
    changed = _spec(dataset, base={"data": {"dataset_dir": str(dataset)}, "optim": {"epochs": 2}})
    with pytest.raises(ConfigError, match="different training config"):
        runner.run_experiment(changed, out, figures=False)


def test_bad_training_key_fails_before_any_training(dataset, fakes, tmp_path):
    spec = _spec(dataset, runs={"bce": {"loss": "bce"}, "focal": {"set": {"optim.lerning_rate": 1}}})
    with pytest.raises(ConfigError, match="lerning_rate"):
        runner.run_experiment(spec, tmp_path / "exp", figures=False)
    assert fakes.calls == []


def test_cross_validation_reports_mean_and_std(dataset, fakes, tmp_path):
    result = runner.run_experiment(_spec(dataset), tmp_path / "exp", splits=[0, 1], figures=False)
    assert fakes.trained() == ["split-0/bce", "split-0/focal", "split-1/bce", "split-1/focal"]
    cv = result.results["cv"]
    assert cv["splits"] == [0, 1]
    bce = cv["systems"]["bce"]["PR-AUC-macro"]
    assert bce["n"] == 2 and bce["mean"] == pytest.approx(np.mean(bce["values"]))
    assert bce["std"] == pytest.approx(np.std(bce["values"], ddof=1))
    assert "mean ± std (2 splits)" in result.report_text


def test_default_label():
    assert runner.default_label("focal") == "Focal Loss"
    assert runner.default_label("cb_focal_loss") == "CB Focal Loss"
    assert runner.default_label("bce_class_aware") == "BCE Loss (class-aware)"
    assert runner.default_label("db_focal_mixup") == "DB Focal Loss (mixup)"
    assert runner.default_label("ensemble_class_aware") == "Ensemble (class-aware)"
    assert runner.default_label("my_system") == "my_system"


def test_missing_split_fails_before_any_training(dataset, fakes, tmp_path):
    with pytest.raises(DataError, match="no split-3 files"):
        runner.run_experiment(_spec(dataset), tmp_path / "exp", splits=[0, 3], figures=False)
    assert fakes.calls == []


@pytest.mark.parametrize(("bf16", "vnni", "expected"), [("1", "1", "auto"), ("0", "1", "fp32"), ("0", "0", "fp32")])
def test_experiments_score_in_bf16_where_it_is_fast_and_never_in_int8(monkeypatch: pytest.MonkeyPatch, bf16: str,
                                                                     vnni: str, expected: str) -> None:
    """A fresh checkpoint is scored once: on a CPU where ``auto`` would take int8 (VNNI, no fast bf16) the
    experiment scores in float32, so no export or calibration runs and the metric tables get float32's numbers."""
    from focaltag.experiments.runner import scoring_precision
    from focaltag.inference.precision import resolve_model_precision
    from focaltag.models import create_model

    monkeypatch.setenv("FOCALTAG_CPU_BF16", bf16)
    monkeypatch.setenv("FOCALTAG_CPU_VNNI", vnni)
    precision = scoring_precision("cpu")
    assert precision == expected
    model = create_model("short_chunk_resnet", n_tags=56, width=8)
    assert resolve_model_precision(precision, "cpu", model) in ("bf16", "fp32")  # what would run: never int8
