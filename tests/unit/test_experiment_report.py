"""Report building blocks against independent computations: groups, thresholds, ensembles, CV summary."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from focaltag.data.tags import MOODTHEME_TAGS, MOODTHEME_TRAIN_COUNTS
from focaltag.errors import EvaluationError
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
