"""``focaltag evaluate / compare / ensemble`` through the real CLI, on the paper authors' published validation
matrices (reproducing the figures in ../shared/README.md) and on small bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score
from statsmodels.stats.multitest import multipletests

from focaltag.cli import main
from focaltag.evaluation import load_thresholds

LOSSES = ("bce", "focal_loss", "cb_focal_loss", "db_focal_loss")
# ../shared/README.md: validation split, all training data, standard sampling, macro PR-AUC / ROC-AUC
PUBLISHED = {"bce": (0.1238, 0.7482), "focal_loss": (0.1230, 0.7531), "cb_focal_loss": (0.1224, 0.7495),
             "db_focal_loss": (0.1204, 0.7454)}


@pytest.fixture(scope="module")
def ref(reference_predictions_dir: Path) -> dict[str, Path]:
    val = reference_predictions_dir / "all_training_data" / "standard_sampling" / "validation"
    paths = {loss: val / f"{loss}_predictions.npy" for loss in LOSSES}
    paths["gt"] = reference_predictions_dir / "validation_ground_truth.npy"
    paths["train"] = reference_predictions_dir / "train-splits" / "jamendo_moodtheme-train.tsv"
    paths["m4a"] = reference_predictions_dir / "train-splits" / "m4a_moodtheme-train.tsv"
    paths["val_tsv"] = reference_predictions_dir / "train-splits" / "jamendo_moodtheme-validation.tsv"
    return paths


def run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def run_error(capsys: pytest.CaptureFixture, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------------ paper figures
@pytest.mark.parametrize("loss", LOSSES)
def test_published_validation_figures(capsys, ref, loss: str) -> None:
    result = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref[loss]),
                               "--json"])
    assert set(result) == {"ROC-AUC-macro", "PR-AUC-macro", "ROC-AUC-micro", "PR-AUC-micro"}
    pr, roc = PUBLISHED[loss]
    assert round(result["PR-AUC-macro"], 4) == pr
    assert round(result["ROC-AUC-macro"], 4) == roc
    gt, pred = np.load(ref["gt"]), np.load(ref[loss])
    for average in ("macro", "micro"):
        assert result[f"PR-AUC-{average}"] == pytest.approx(
            average_precision_score(gt, pred, average=average), abs=1e-12)
        assert result[f"ROC-AUC-{average}"] == pytest.approx(roc_auc_score(gt, pred, average=average), abs=1e-12)


def test_ensemble_of_four_equals_numpy_mean(capsys, ref, tmp_path) -> None:
    out = tmp_path / "ensemble.npy"
    info = run_json(capsys, ["ensemble", *(str(ref[loss]) for loss in LOSSES), "-o", str(out), "--json"])
    assert info["weights"] == [0.25] * 4 and info["shape"] == [3802, 56]
    expected = np.mean(np.stack([np.load(ref[loss]) for loss in LOSSES]), axis=0)
    np.testing.assert_array_equal(np.load(out), expected)
    result = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(out), "--json"])
    gt = np.load(ref["gt"])
    assert result["PR-AUC-macro"] == pytest.approx(average_precision_score(gt, expected, average="macro"), abs=1e-12)
    assert result["ROC-AUC-macro"] == pytest.approx(roc_auc_score(gt, expected, average="macro"), abs=1e-12)


def test_ensemble_optimised_weights_reported(capsys, ref, tmp_path) -> None:
    out = tmp_path / "weighted.npy"
    members = [str(ref[loss]) for loss in LOSSES[:2]]
    argv = ["ensemble", *members, "-o", str(out), "--optimize-on", str(ref["gt"]), *members]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("optimised weights") and members[0] in text
    info = run_json(capsys, [*argv, "--json"])
    w = np.array(info["weights"])
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    val = info["validation"]
    assert val["PR-AUC-macro (optimised)"] >= val["PR-AUC-macro (mean)"]
    expected = (w[0] * np.load(members[0]).astype(np.float64) + w[1] * np.load(members[1])).astype(np.float32)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)


def test_groups_from_the_two_training_lists(capsys, ref) -> None:
    result = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref["bce"]),
                               "--train-tsv", str(ref["train"]), "--train-tsv", str(ref["m4a"]),
                               "--per-tag", "--json"])
    groups = result["groups"]
    assert [groups[g]["n_tags"] for g in ("head", "middle", "tail")] == [14, 27, 15]
    assert len(groups["head"]["tags"]) == 14
    per_tag = result["per_tag"]
    assert per_tag["mood/theme---love"]["train_count"] == 1636 and per_tag["mood/theme---fast"]["train_count"] == 68
    head_pr = np.mean([per_tag[t]["PR-AUC"] for t in groups["head"]["tags"]])
    assert groups["head"]["PR-AUC"] == pytest.approx(head_pr)
    # split-0 train alone: a different, threshold-dependent split
    alone = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref["bce"]),
                              "--train-tsv", str(ref["train"]), "--group-thresholds", "500,100", "--json"])
    assert sum(g["n_tags"] for g in alone["groups"].values()) == 56


def test_tsv_ground_truth_equals_npy(capsys, ref) -> None:
    base = ["evaluate", "--predictions", str(ref["bce"]), "--json"]
    from_npy = run_json(capsys, [*base, "--ground-truth", str(ref["gt"])])
    from_tsv = run_json(capsys, [*base, "--tsv", str(ref["val_tsv"])])
    assert from_tsv == from_npy


def test_thresholds_and_bootstrap(capsys, ref, tmp_path) -> None:
    thr_file = tmp_path / "thresholds.tsv"
    result = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref["bce"]),
                               "--thresholds-from", str(ref["gt"]), str(ref["focal_loss"]),
                               "--save-thresholds", str(thr_file), "--bootstrap", "100", "--json"])
    thresholds = load_thresholds(thr_file)
    assert len(thresholds) == 56 and all(t.startswith("mood/theme---") for t in thresholds)
    gt, pred = np.load(ref["gt"]), np.load(ref["bce"])
    decisions = pred > np.array(list(thresholds.values()))
    p, r, f, _ = precision_recall_fscore_support(gt, decisions, average="macro", zero_division=0)
    assert result["F-score-macro"] == pytest.approx(f) and result["precision-macro"] == pytest.approx(p)
    intervals = result["ci"]["intervals"]
    assert set(intervals) == {"ROC-AUC-macro", "PR-AUC-macro", "precision-macro", "recall-macro",
                              "F-score-macro"}
    lo, hi = intervals["ROC-AUC-macro"]
    assert lo < result["ROC-AUC-macro"] < hi
    # reapplying the saved file gives the same decisions
    again = run_json(capsys, ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref["bce"]),
                              "--thresholds", str(thr_file), "--json"])
    assert again["F-score-macro"] == result["F-score-macro"]


def test_compare_paired_bootstrap(capsys, ref) -> None:
    others = ("focal_loss", "cb_focal_loss", "db_focal_loss")
    result = run_json(capsys, ["compare", "--ground-truth", str(ref["gt"]), str(ref["bce"]),
                               *[str(ref[o]) for o in others], "--bootstrap", "100", "--json"])
    gt = np.load(ref["gt"])
    assert result["adjust"]["method"] == "holm" and result["adjust"]["size"] == 6
    for other, comparison in zip(others, result["comparisons"], strict=True):
        assert comparison["B"] == str(ref[other])
        for metric, fn in (("PR-AUC-macro", average_precision_score), ("ROC-AUC-macro", roc_auc_score)):
            stats = comparison[metric]
            a = fn(gt, np.load(ref["bce"]), average="macro")
            b = fn(gt, np.load(ref[other]), average="macro")
            assert stats["diff"] == pytest.approx(a - b, abs=1e-12)
            assert stats["ci"][0] <= stats["ci"][1] and 0 < stats["p_value"] <= stats["p_value_adjusted"] <= 1
    raw = [c[m]["p_value"] for c in result["comparisons"] for m in ("ROC-AUC-macro", "PR-AUC-macro")]
    adjusted = [c[m]["p_value_adjusted"] for c in result["comparisons"] for m in ("ROC-AUC-macro", "PR-AUC-macro")]
    np.testing.assert_allclose(adjusted, multipletests(raw, method="holm")[1], rtol=1e-12)
    assert main(["compare", "--ground-truth", str(ref["gt"]), str(ref["bce"]), str(ref["focal_loss"]),
                 "--bootstrap", "50"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert "p (raw)" in header and "p (Holm)" in header


# ------------------------------------------------------------------------------------------ compare, several B
@pytest.fixture()
def family(tmp_path: Path) -> dict[str, Path]:
    """A ground truth, model A and three B models: one as good as A, two clearly worse (small raw p-values)."""
    rng = np.random.default_rng(7)
    y = (rng.random((300, 5)) < 0.3).astype(np.int64)
    y[0], y[1] = 1, 0
    noise = rng.random(y.shape)
    mats = {"gt": y, "a": 0.5 * y + noise, "b_same": 0.5 * y + rng.random(y.shape),
            "b_worse": 0.15 * y + noise, "b_worst": 0.05 * y + rng.random(y.shape)}
    paths = {}
    for name, arr in mats.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32) if name != "gt" else arr)
    return paths


def _compare_args(family: dict[str, Path], *extra: str) -> list[str]:
    return ["compare", "--ground-truth", str(family["gt"]), str(family["a"]), str(family["b_same"]),
            str(family["b_worse"]), str(family["b_worst"]), "--bootstrap", "200", *extra]


def _table_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("B file"))
    rows = []
    for ln in lines[start + 2:]:
        if ln.startswith("("):
            break
        rows.append(ln.split())
    return rows


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_compare_several_b_files_adjusts_the_table(capsys, family, method: str) -> None:
    result = run_json(capsys, _compare_args(family, "--json", "--adjust", method))
    assert result["B"] == [str(family[k]) for k in ("b_same", "b_worse", "b_worst")]
    fam = result["adjust"]
    assert fam["method"] == method and fam["size"] == 6 and fam["metrics"] == ["ROC-AUC-macro", "PR-AUC-macro"]
    assert fam["interval_level"] == pytest.approx(1 - 0.05 / 6)
    raw = np.array([c[m]["p_value"] for c in result["comparisons"] for m in fam["metrics"]])
    adjusted = np.array([c[m]["p_value_adjusted"] for c in result["comparisons"] for m in fam["metrics"]])
    assert (adjusted >= raw).all() and (adjusted <= 1).all() and raw.min() < 0.01
    np.testing.assert_allclose(adjusted, multipletests(raw, method=method)[1], rtol=1e-12)
    for c in result["comparisons"]:
        for m in fam["metrics"]:
            s = c[m]  # the simultaneous interval is wider than the per-comparison one and holds the difference
            assert s["ci_simultaneous"][0] <= s["ci"][0] <= s["diff"] <= s["ci"][1] <= s["ci_simultaneous"][1]
            if method == "bonferroni":  # the interval matching Bonferroni excludes 0 exactly when it rejects
                assert (s["ci_simultaneous"][0] > 0 or s["ci_simultaneous"][1] < 0) == (s["p_value_adjusted"] < 0.05)
    assert main(_compare_args(family, "--adjust", method)) == 0
    out = capsys.readouterr().out
    label = {"holm": "Holm", "bonferroni": "Bonferroni"}[method]
    assert f"p (raw)  p ({label})" in out and "95% simultaneous CI of A - B" in out
    assert "over the family of 6 tests, every row of the table: 3 B files x 2 metrics" in out
    rows = _table_rows(out)
    assert [r[:2] for r in rows] == [[b, m] for b in ("B1", "B2", "B3") for m in ("ROC-AUC-macro", "PR-AUC-macro")]
    for r in rows:
        p_raw, p_adj = (float(x.lstrip("<")) for x in r[-2:])
        assert p_adj >= p_raw


def test_compare_adjust_none_equals_raw(capsys, family) -> None:
    result = run_json(capsys, _compare_args(family, "--json", "--adjust", "none"))
    for c in result["comparisons"]:
        for m in result["adjust"]["metrics"]:
            assert c[m]["p_value_adjusted"] == c[m]["p_value"] and c[m]["ci_simultaneous"] == c[m]["ci"]
    assert main(_compare_args(family, "--adjust", "none")) == 0
    out = capsys.readouterr().out
    assert "NOT adjusted for the 6 tests" in out and "per comparison (95% each), not simultaneous" in out
    for r in _table_rows(out):
        assert r[-1] == r[-2]


def test_compare_bad_adjust_and_bootstrap_are_one_line(capsys, family) -> None:
    line = run_error(capsys, _compare_args(family, "--adjust", "fdr"))
    assert line == "focaltag: error: --adjust 'fdr': unknown adjustment; choose one of holm, bonferroni, none"
    line = run_error(capsys, _compare_args(family, "--bootstrap", "1"))
    assert "--bootstrap must be >= 2" in line


def test_human_and_markdown_tables(capsys, ref) -> None:
    base = ["evaluate", "--ground-truth", str(ref["gt"]), "--predictions", str(ref["bce"])]
    assert main(base) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "value"] and lines[3].split() == ["PR-AUC-macro", "0.1238"]
    assert main([*base, "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| metric | value |" and "| PR-AUC-macro | 0.1238 |" in lines


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture()
def small(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(np.int64)
    y[0] = 1
    y[1] = 0
    s = rng.random((40, 3)).astype(np.float32)
    files = {"gt": y, "pred": s, "pred_wide": rng.random((40, 4)), "pred_nan": np.where(s > 0.9, np.nan, s),
             "gt_bad": np.where(y == 1, 2, 0), "gt_nopos": np.concatenate([y[:, :2], np.zeros((40, 1), int)], 1)}
    paths = {}
    for name, arr in files.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    paths["missing"] = tmp_path / "missing.npy"
    return paths


@pytest.mark.parametrize(
    ("gt", "pred", "expected"),
    [
        ("gt", "pred_wide", "has 4 tag columns but the ground truth has 3 tags"),
        ("gt", "pred_nan", "NaN/inf"),
        ("gt_bad", "pred", "must contain only 0 and 1, got 2"),
        ("gt", "missing", "predictions file not found"),
        ("missing", "pred", "ground truth file not found"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, small, gt: str, pred: str, expected: str) -> None:
    line = run_error(capsys, ["evaluate", "--ground-truth", str(small[gt]), "--predictions", str(small[pred])])
    assert line.startswith("focaltag: error: ") and expected in line


def test_bad_input_other_commands(capsys, small, tmp_path) -> None:
    line = run_error(capsys, ["compare", "--ground-truth", str(small["gt"]), str(small["pred"]),
                              str(small["pred_nan"]), "--bootstrap", "10"])
    assert "predictions B" in line and "NaN/inf" in line
    line = run_error(capsys, ["ensemble", str(small["pred"]), str(small["pred_wide"]), "-o", str(tmp_path / "o.npy")])
    assert "shape" in line and not (tmp_path / "o.npy").exists()
    line = run_error(capsys, ["ensemble", str(small["pred"]), str(small["missing"]), "-o", str(tmp_path / "o.npy")])
    assert "not found" in line
    line = run_error(capsys, ["ensemble", str(small["pred"]), str(small["pred"]), "-o", str(tmp_path / "o.npy"),
                              "--optimize-on", str(small["gt"]), str(small["pred"])])
    assert "--optimize-on needs VAL_GT plus one validation matrix per member" in line


def test_tsv_with_unknown_tag(capsys, small, tmp_path) -> None:
    tsv = tmp_path / "test.tsv"
    tsv.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
                   "track_1\ta\tb\t01/1.mp3\t30.0\tmood/theme---happy\n"
                   "track_2\ta\tb\t02/2.mp3\t30.0\tmood/theme---horror\n")
    line = run_error(capsys, ["evaluate", "--tsv", str(tsv), "--predictions", str(small["pred"])])
    assert "track_2" in line and "'mood/theme---horror'" in line and "not in the 56-tag vocabulary" in line


def test_tag_without_positives_warns_and_is_excluded(capsys, small) -> None:
    assert main(["evaluate", "--ground-truth", str(small["gt_nopos"]), "--predictions", str(small["pred"]),
                 "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "'tag_002'" in err[0] and "excluded" in err[0]
    result = json.loads(captured.out)
    assert result["excluded_tags"] == ["tag_002"]
    y, s = np.load(small["gt_nopos"]), np.load(small["pred"])
    assert result["PR-AUC-macro"] == pytest.approx(average_precision_score(y[:, :2], s[:, :2]), abs=1e-12)
