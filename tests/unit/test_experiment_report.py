"""Report building blocks against independent computations: groups, thresholds, ensembles, CV summary."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from statsmodels.stats.multitest import multipletests

from focaltag.data.tags import MOODTHEME_TAGS, MOODTHEME_TRAIN_COUNTS
from focaltag.errors import ConfigError, EvaluationError
from focaltag.experiments.figures import middle_range, tag_groups
from focaltag.experiments.report import (
    ReportOptions,
    auto_group_thresholds,
    build_results,
    render_report,
    summarize_splits,
)
from focaltag.experiments.spec import TableSpec


def _data(seed: int = 0, n: int = 120, k: int = 5):
    rng = np.random.default_rng(seed)
    gt = (rng.random((n, k)) < 0.3).astype(np.int64)
    gt[0], gt[1] = 1, 0
    a = np.clip(0.35 * gt + 0.65 * rng.random(gt.shape), 0, 1).astype(np.float32)
    b = np.clip(0.10 * gt + 0.90 * rng.random(gt.shape), 0, 1).astype(np.float32)
    return gt, a, b


def test_tag_groups_follow_the_paper_rule():
    assert tag_groups([600, 551, 550, 201, 200, 10], (550, 200)) == ["head", "head", "middle", "middle", "tail",
                                                                       "tail"]
    assert middle_range(550, 200) == "201-550" and middle_range(3, 2) == "3"


def test_auto_thresholds_keep_the_paper_shares_on_the_real_profile():
    counts = np.array([MOODTHEME_TRAIN_COUNTS[t.split("---")[1]] for t in MOODTHEME_TAGS])
    head, tail = auto_group_thresholds(counts)
    groups = tag_groups(counts, (head, tail))
    assert groups.count("head") == 14 and groups.count("tail") == 15
    tiny = np.array([1, 1, 1, 2, 2, 3])
    h, t = auto_group_thresholds(tiny)
    assert h > t >= 0


def test_build_results_matches_sklearn_and_forms_the_mean_ensemble():
    gt, a, b = _data()
    counts = np.array([700, 300, 250, 100, 50])
    tables = {"t1": TableSpec("metrics", "T1", "", ["a", "b", "ens"], "a"),
              "t2": TableSpec("groups", "T2", "", ["a", "b", "ens"])}
    results, preds = build_results({"a": a, "b": b}, gt, tag_names=[f"t{i}" for i in range(5)],
                                   train_counts=counts, ensembles={"ens": ["a", "b"]}, tables=tables,
                                   options=ReportOptions(baseline="a", bootstrap=30))
    np.testing.assert_allclose(preds["ens"], (a.astype(np.float64) + b) / 2, rtol=1e-6)
    for name, pred in (("a", a), ("b", b), ("ens", preds["ens"])):
        m = results["systems"][name]["metrics"]
        assert m["PR-AUC-macro"] == pytest.approx(average_precision_score(gt, pred, average="macro"))
        assert m["ROC-AUC-macro"] == pytest.approx(roc_auc_score(gt, pred, average="macro"))
        lo, hi = results["systems"][name]["ci"]["PR-AUC-macro"]
        assert 0 <= lo <= hi <= 1
    head = results["systems"]["a"]["groups"]["head"]["PR-AUC"]
    assert head == pytest.approx(average_precision_score(gt[:, 0], a[:, 0]))
    tests = {(t["system"], t["baseline"]): t for t in results["paired_tests"]}
    assert set(tests) == {("b", "a"), ("ens", "a")}
    diff = results["systems"]["b"]["metrics"]["PR-AUC-macro"] - results["systems"]["a"]["metrics"]["PR-AUC-macro"]
    assert tests[("b", "a")]["PR-AUC-macro"]["diff"] == pytest.approx(diff)
    assert 0 < tests[("b", "a")]["PR-AUC-macro"]["p"] <= 1
    text = render_report(results)
    assert "| ens | " in text and "(baseline)" in text and "Head (> 550; 1 tags)" in text


def test_build_results_input_errors():
    gt, a, _ = _data()
    with pytest.raises(EvaluationError, match=r"predictions 'x' have shape \(120, 4\)"):
        build_results({"x": a[:, :4]}, gt, options=ReportOptions(bootstrap=0))
    with pytest.raises(EvaluationError, match="member 'zz' has no predictions"):
        build_results({"a": a}, gt, ensembles={"e": ["a", "zz"]}, options=ReportOptions(bootstrap=0))
    with pytest.raises(EvaluationError, match="no prediction matrices"):
        build_results({}, gt)
    with pytest.raises(EvaluationError, match="train counts have"):
        build_results({"a": a}, gt, train_counts=np.ones(3), options=ReportOptions(bootstrap=0))


def test_summarize_splits_mean_and_sample_std():
    per = {s: {"systems": {"a": {"metrics": {"PR-AUC-macro": v, "ROC-AUC-macro": 0.5 + v}}}}
           for s, v in ((0, 0.1), (1, 0.2), (2, 0.4))}
    cv = summarize_splits(per)
    pr = cv["systems"]["a"]["PR-AUC-macro"]
    assert cv["splits"] == [0, 1, 2] and pr["n"] == 3
    assert pr["mean"] == pytest.approx(0.7 / 3)
    assert pr["std"] == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))


def test_every_printed_interval_contains_its_printed_estimate():
    """Small test sets made the old percentile intervals miss their own point estimate; the normal intervals
    (point +- z SE) contain it by construction, and the printed (rounded) ones still do."""
    import re

    gt, a, b = _data(seed=3, n=60)
    counts = np.array([700, 300, 250, 100, 50])
    results, _ = build_results({"a": a, "b": b}, gt, train_counts=counts, ensembles={"ens": ["a", "b"]},
                               options=ReportOptions(bootstrap=200, seed=1, group_thresholds=(500, 120)))
    assert results["meta"]["ci_method"].startswith("normal")
    text = render_report(results)
    cells = re.findall(r"(\d\.\d{4}) \[(-?\d\.\d{3}), (-?\d\.\d{3})\]", text)
    assert len(cells) >= 3 * 2 * 2  # Tables I and IV (PR and ROC) for three systems, plus groups
    for value, lo, hi in cells:
        assert float(lo) <= float(value) <= float(hi), (value, lo, hi)
    for entry in results["systems"].values():
        for metric, (lo, hi) in entry["ci"].items():
            assert lo <= entry["metrics"][metric] <= hi
    assert "outside their interval" not in text


def _family_data(seed: int = 0, n: int = 400, k: int = 6):
    """A baseline, four systems that are the baseline plus noise (small differences, some with raw p < 0.05
    that do not survive the adjustment) and one clearly worse system."""
    rng = np.random.default_rng(seed)
    gt = (rng.random((n, k)) < 0.3).astype(np.int64)
    gt[0], gt[1] = 1, 0
    base = 0.4 * gt + rng.random(gt.shape)
    systems = {"base": base.astype(np.float32)}
    for i in range(1, 5):
        systems[f"s{i}"] = (base + 0.3 * rng.random(gt.shape)).astype(np.float32)
    systems["worse"] = (0.1 * gt + rng.random(gt.shape)).astype(np.float32)
    return gt, systems


@pytest.mark.parametrize("method", ["holm", "bonferroni", "none"])
def test_each_table_is_adjusted_over_its_rows_and_metrics(method: str) -> None:
    gt, systems = _family_data()
    names = list(systems)
    tables = {"t1": TableSpec("metrics", "Table I", "", names, "base"),
              "t3": TableSpec("metrics", "Table III", "", ["base", "s3"], "base"),
              "t4": TableSpec("ranking", "Table IV", "", names, "base")}
    results, _ = build_results(systems, gt, tables=tables,
                               options=ReportOptions(baseline="base", bootstrap=200, adjust=method))
    paired = {(t["system"], t["baseline"]): t for t in results["paired_tests"]}
    sizes = {"t1": 10, "t3": 2, "t4": 5}  # rows x Δ metrics: the ranking shows only ΔPR-AUC
    for tname, size in sizes.items():
        family = results["tables"][tname]["multiple_testing"]
        assert family["method"] == method and family["size"] == size and len(family["tests"]) == size
        raw = np.array([t["p"] for t in family["tests"]])
        assert raw.tolist() == [paired[(t["system"], "base")][t["metric"]]["p"] for t in family["tests"]]
        adjusted = np.array([t["p_adjusted"] for t in family["tests"]])
        expected = raw if method == "none" else multipletests(raw, method=method)[1]
        np.testing.assert_allclose(adjusted, expected, rtol=1e-12)
    # the same test gets a larger adjusted p-value in the larger family
    t1 = {(t["system"], t["metric"]): t["p_adjusted"] for t in results["tables"]["t1"]["multiple_testing"]["tests"]}
    t3 = {(t["system"], t["metric"]): t["p_adjusted"] for t in results["tables"]["t3"]["multiple_testing"]["tests"]}
    assert all(t3[key] <= t1[key] for key in t3)
    text = render_report(results)
    if method == "none":
        assert "not adjusted" in text and " * |" not in text
        return
    label = {"holm": "Holm", "bonferroni": "Bonferroni"}[method]
    assert f"ΔPR-AUC vs base (p; {label} p)" in text
    assert "the 5 rows of this table tested against base x 2 metrics (ΔPR-AUC, ΔROC-AUC) = 10 tests" in text
    assert "x 1 metric (ΔPR-AUC) = 5 tests" in text
    assert f"only when its {label}-adjusted p-value is below 0.05" in text
    tests = results["tables"]["t1"]["multiple_testing"]["tests"]
    assert any(t["p"] < 0.05 <= t["p_adjusted"] for t in tests)  # the case the adjustment is for is present
    for t in tests:  # the star follows the adjusted p-value, never the raw one
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {t['system']} |"))
        cell = [c.strip() for c in row.strip("|").split("|")][3 if t["metric"] == "PR-AUC-macro" else 4]
        assert cell.endswith(" *") == (t["p_adjusted"] < 0.05)
        assert f"; {label} p" in cell


def test_report_adjust_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="--adjust 'fdr'"):
        ReportOptions(adjust="fdr")
