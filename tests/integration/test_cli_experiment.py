"""``focaltag experiment report|run`` through the real CLI: the published matrices' figures, the runner's
skip/resume rules, and one real micro grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from focaltag.cli import main

LOSSES = {"bce": "bce", "focal": "focal_loss", "cb_focal": "cb_focal_loss", "db_focal": "db_focal_loss"}


def _sklearn_macro(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return (average_precision_score(gt, pred, average="macro"), roc_auc_score(gt, pred, average="macro"))


def _row(text: str, label: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.startswith(f"| {label} |")), None)
    assert line is not None, f"no table row for {label!r} in:\n{text}"
    return line


def test_report_on_published_validation_matrices(reference_predictions_dir, capsys, tmp_path):
    folder = reference_predictions_dir / "all_training_data" / "standard_sampling" / "validation"
    gt_path = reference_predictions_dir / "validation_ground_truth.npy"
    train = reference_predictions_dir / "train-splits"
    args = ["experiment", "report", "--ground-truth", str(gt_path), "--bootstrap", "20", "--out", str(tmp_path),
            "--train-tsv", str(train / "jamendo_moodtheme-train.tsv"), str(train / "m4a_moodtheme-train.tsv"),
            "--predictions", *[f"{k}={folder / f'{v}_predictions.npy'}" for k, v in LOSSES.items()]]
    assert main(args) == 0
    out = capsys.readouterr().out
    gt = np.load(gt_path)
    expected = {"BCE Loss": (0.1238, 0.7482), "Focal Loss": (0.1230, 0.7531), "CB Focal Loss": (0.1224, 0.7495),
                "DB Focal Loss": (0.1204, 0.7454)}
    preds = {}
    for (key, stem), (label, (pr, roc)) in zip(LOSSES.items(), expected.items(), strict=True):
        preds[key] = np.load(folder / f"{stem}_predictions.npy")
        sk_pr, sk_roc = _sklearn_macro(gt, preds[key])
        assert round(sk_pr, 4) == pr and round(sk_roc, 4) == roc  # the README's figures, independently
        row = _row(out, label)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].startswith(f"{sk_pr:.4f} [") and cells[2].startswith(f"{sk_roc:.4f} [")
    ens_pr, ens_roc = _sklearn_macro(gt, np.mean([preds[k] for k in LOSSES], axis=0))
    ens = [c.strip() for c in _row(out, "Ensemble").strip("|").split("|")]
    assert ens[1].startswith(f"{ens_pr:.4f}") and ens[2].startswith(f"{ens_roc:.4f}")
    # paired test column against BCE with raw and Holm p-values, the group table, the ranking, and the files
    assert re.search(r"\| Focal Loss \|.*\| [+-]0\.\d{4} \(p[=<]0\.\d{3}; Holm p[=<]0\.\d{3}\)", out)
    assert "ΔPR-AUC vs BCE Loss (p; Holm p)" in out
    assert ("Holm's step-down method over this table's family, the 4 rows of this table tested against BCE Loss x "
            "2 metrics (ΔPR-AUC, ΔROC-AUC) = 8 tests") in out
    assert "Head (> 550; 14 tags)" in out and "Middle (201-550; 27 tags)" in out and "Tail (<= 200; 15 tags)" in out
    assert "Table IV" in out and "| 1 | Ensemble |" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["systems"]["ensemble"]["members"] == list(LOSSES)
    assert abs(results["systems"]["bce"]["metrics"]["PR-AUC-macro"] - 0.12378) < 1e-4
    family = results["tables"]["table1"]["multiple_testing"]
    raw = [t["p"] for t in family["tests"]]
    assert family["method"] == "holm" and family["size"] == 8
    np.testing.assert_allclose([t["p_adjusted"] for t in family["tests"]], multipletests(raw, method="holm")[1],
                               rtol=1e-12)
    for fig in results["figures"]:
        assert (tmp_path / fig).stat().st_size > 10_000
    assert (tmp_path / "report.md").read_text() == out.rstrip("\n") + "\n"


def test_report_shows_raw_and_adjusted_p_values(tmp_path, capsys):
    """Without ../shared: three systems and the ensemble against BCE; raw and Holm (or Bonferroni) p-values."""
    rng = np.random.default_rng(2)
    gt = (rng.random((300, 6)) < 0.3).astype(np.int64)
    gt[0], gt[1] = 1, 0
    np.save(tmp_path / "gt.npy", gt)
    preds = []
    for name, w in (("bce", 0.4), ("focal", 0.35), ("db_focal", 0.1)):
        np.save(tmp_path / f"{name}.npy", (w * gt + rng.random(gt.shape)).astype(np.float32))
        preds.append(f"{name}={tmp_path / f'{name}.npy'}")
    base = ["experiment", "report", "--ground-truth", str(tmp_path / "gt.npy"), "--bootstrap", "100",
            "--predictions", *preds]
    assert main(base) == 0
    out = capsys.readouterr().out
    row = _row(out, "DB Focal Loss")
    assert re.search(r"\(p[=<]0\.\d{3}; Holm p[=<]0\.\d{3}\)", row)
    assert "the 3 rows of this table tested against BCE Loss x 2 metrics (ΔPR-AUC, ΔROC-AUC) = 6 tests" in out
    assert main([*base, "--adjust", "bonferroni", "--out", str(tmp_path / "rep"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"; Bonferroni p[=<]0\.\d{3}\)", _row(out, "Focal Loss"))
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    family = results["tables"]["table1"]["multiple_testing"]
    raw = np.array([t["p"] for t in family["tests"]])
    adjusted = np.array([t["p_adjusted"] for t in family["tests"]])
    np.testing.assert_allclose(adjusted, multipletests(raw, method="bonferroni")[1], rtol=1e-12)
    assert (adjusted >= raw).all()


def test_report_small_matrices_without_out(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt = (rng.random((80, 6)) < 0.3).astype(np.int64)
    gt[0], gt[1] = 1, 0
    paths = {}
    for name in ("bce", "focal"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], np.clip(gt * 0.3 + rng.random(gt.shape) * 0.7, 0, 1).astype(np.float32))
    np.save(tmp_path / "gt.npy", gt)
    code = main(["experiment", "report", "--ground-truth", str(tmp_path / "gt.npy"), "--bootstrap", "0",
                 "--synthetic", "--predictions", *[f"{k}={v}" for k, v in paths.items()]])
    assert code == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC DATA" in out and "| Ensemble |" in out and "No bootstrap requested" in out
    assert "Table II" not in out  # no training counts -> no group table


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--predictions", "bce"], "expected NAME=PRED.npy"),
        (["--predictions", "bce=missing.npy"], "predictions 'bce' file not found"),
        (["--predictions", "bce=wide.npy"], "have shape (80, 7) but the ground truth has (80, 6)"),
        (["--predictions", "bce=gt.npy", "bce=gt.npy"], "the name 'bce' is given twice"),
        (["--predictions", "bce=gt.npy", "--bootstrap", "-1"], "--bootstrap"),
        (["--predictions", "bce=gt.npy", "--group-thresholds", "1,2"], "group thresholds"),
        (["--predictions", "bce=gt.npy", "--adjust", "fdr"], "--adjust 'fdr': unknown adjustment"),
    ],
)
def test_report_input_errors_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "gt.npy", (np.arange(480).reshape(80, 6) % 3 == 0).astype(np.int64))
    np.save(tmp_path / "wide.npy", np.zeros((80, 7), np.float32))
    with pytest.raises(SystemExit) if message == "expected NAME=PRED.npy" else _no_raise():
        code = main(["experiment", "report", "--ground-truth", "gt.npy", *extra])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_run_rejects_bad_experiment_file(tmp_path, capsys):
    bad = tmp_path / "e.yaml"
    bad.write_text("runs: {bce: {loss: bce, lr: 3}}\n")
    assert main(["experiment", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "runs.bce: unknown key 'lr'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real micro grid (tiny data)
def _micro_dataset(synth_dataset: Path, root: Path, sizes=(("train", 24), ("validation", 10), ("test", 8))) -> Path:
    """A subset of the synthetic dataset (same audio) so a real grid trains in seconds."""
    folder = root / "splits" / "split-0"
    folder.mkdir(parents=True)
    for subset, n in sizes:
        name = f"autotagging_moodtheme-{subset}.tsv"
        lines = (synth_dataset / "splits" / "split-0" / name).read_text().splitlines()
        (folder / name).write_text("\n".join(lines[: n + 1]) + "\n")
    (root / "audio").symlink_to(synth_dataset / "audio", target_is_directory=True)
    (root / "SYNTHETIC_DATASET.txt").write_text("synthetic\n")
    return root


def _micro_spec(tmp_path: Path, dataset: Path, runs=("bce", "focal")) -> Path:
    import yaml

    spec = {
        "name": "micro",
        "base": {"data": {"dataset_dir": str(dataset), "cache_dir": str(tmp_path / "cache"), "prepare_workers": 1},
                 "model": {"width": 4},
                 "optim": {"epochs": 1, "batch_size": 8},
                 "validation": {"n_chunks": 2, "tracks_per_batch": 8},
                 "runtime": {"device": "cpu", "num_workers": 0, "channels_last": False}},
        "runs": {r: {"loss": r} for r in runs},
        "ensembles": {"ensemble": list(runs)},
        "tables": {"table1": {"kind": "metrics", "title": "Table I", "systems": [*runs, "ensemble"]},
                   "table2": {"kind": "groups", "title": "Table II", "systems": [*runs, "ensemble"]},
                   "table4": {"kind": "ranking", "title": "Table IV", "systems": ["ensemble", *runs]}},
        "evaluation": {"bootstrap": 10, "val_chunks": 2, "test_chunks": 2, "batch_size": 16,
                       "group_thresholds": "auto"},
    }
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_micro_grid_then_redo_one_run(synth_dataset, tmp_path, capsys):
    dataset = _micro_dataset(synth_dataset, tmp_path / "ds")
    spec = _micro_spec(tmp_path, dataset)
    out = tmp_path / "exp"
    assert main(["experiment", "run", str(spec), "--out", str(out), "--no-figures"]) == 0
    captured = capsys.readouterr()
    for needle in ("SYNTHETIC DATA", "## Table I", "## Table II", "## Table IV", "| Ensemble |", "| Focal Loss |"):
        assert needle in captured.out
    runs = out / "split-0" / "runs"
    assert np.load(runs / "bce" / "predictions" / "test.npy").shape[0] == 8
    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    bce_best = (runs / "bce" / "best.pt").stat().st_mtime_ns
    (runs / "focal" / "DONE").unlink()
    assert main(["experiment", "run", str(spec), "--out", str(out), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "split-0 bce: finished earlier, skipped" in err
    assert "split-0 focal: resuming training" in err
    assert (runs / "focal" / "DONE").is_file() and (runs / "bce" / "best.pt").stat().st_mtime_ns == bce_best


@pytest.mark.slow
def test_run_killed_midway_resumes_without_redoing_finished_runs(synth_dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    dataset = _micro_dataset(synth_dataset, tmp_path / "ds")
    spec = _micro_spec(tmp_path, dataset, runs=("bce", "focal", "cb_focal"))
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "focaltag", "experiment", "run", str(spec), "--out", str(out), "--bootstrap", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_done = out / "split-0" / "runs" / "bce" / "DONE"
    deadline = time.time() + 300
    while not first_done.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first_done.exists(), "the first run never finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stamp = first_done.stat().st_mtime_ns
    assert not (out / "split-0" / "runs" / "cb_focal" / "DONE").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "split-0 bce: finished earlier, skipped" in rerun.stderr
    assert first_done.stat().st_mtime_ns == stamp
    for name in ("focal", "cb_focal"):
        assert (out / "split-0" / "runs" / name / "DONE").is_file()
    assert "| CB Focal Loss |" in rerun.stdout


def test_run_init_from_must_exist(tmp_path, capsys):
    spec = tmp_path / "e.yaml"
    spec.write_text("runs: {bce: {loss: bce}}\n")
    code = main(["experiment", "run", str(spec), "--out", str(tmp_path / "o"), "--init-from", "nope.pt"])
    assert code == 2 and "--init-from nope.pt: checkpoint not found" in capsys.readouterr().err
