"""Evaluation metrics against hand-computed values and scikit-learn: AP / ROC-AUC, bootstrap, thresholds,
groups, ensembles and input validation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

import focaltag
from focaltag.errors import ConfigError, EvaluationError
from focaltag.evaluation import (
    apply_thresholds,
    best_f_thresholds,
    evaluate,
    frequency_groups,
    load_groups,
    load_thresholds,
    mean_ensemble,
    optimize_weights,
    paired_bootstrap,
    per_tag_scores,
    pr_auc_macro,
    pr_auc_micro,
    roc_auc_macro,
    roc_auc_micro,
    save_thresholds,
    weighted_ensemble,
)
from focaltag.evaluation.bootstrap import (
    bootstrap_se,
    bootstrap_tag_scores,
    decision_tag_scores,
    normal_interval,
    percentile_interval,
    resample_indices,
    resample_weights,
)
from focaltag.evaluation.groups import count_training_tags, parse_group_thresholds
from focaltag.evaluation.thresholds import decision_metrics

# Two tags, four tracks. Tag 0: ranking P N P N. Tag 1: a tie at 0.5 between a negative and a positive.
Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
S = np.array([[0.9, 0.5], [0.8, 0.5], [0.7, 0.2], [0.1, 0.1]])
# Hand computation:
# tag 0 AP = (1/2)(1/1 + 2/3) = 5/6; ROC = 3 of 4 positive-negative pairs ordered = 3/4
# tag 1 AP = (1/2)(1/2) + (1/2)(2/3) = 7/12 (the tie group counts as one threshold);
#       ROC = (0.5 [tie] + 1 + 0 + 1) / 4 = 5/8
# micro (all 8 labels pooled, 4 positives): AP = (1/4)(1 + 2/3 + 3/5 + 4/6) = 11/15;
#       ROC = (4 + 3 + 2.5 + 2) / 16 = 23/32
HAND_AP = np.array([5 / 6, 7 / 12])
HAND_ROC = np.array([3 / 4, 5 / 8])


def _random(n: int = 300, t: int = 6, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, t)) < np.linspace(0.05, 0.4, t)).astype(np.int64)
    y[0] = 1  # every tag has a positive
    y[1] = 0  # and a negative
    s = rng.random((n, t)) + 0.5 * y
    if ties:
        s = np.round(s, 1)  # many exact ties, mixed positive/negative
    return y, s.astype(np.float32)


# ------------------------------------------------------------------------------------------ hand values
def test_per_tag_scores_hand_computed() -> None:
    ap, roc = per_tag_scores(Y, S)
    np.testing.assert_allclose(ap, HAND_AP, rtol=0, atol=1e-12)
    np.testing.assert_allclose(roc, HAND_ROC, rtol=0, atol=1e-12)


def test_macro_and_micro_hand_computed() -> None:
    assert pr_auc_macro(Y, S) == pytest.approx(np.mean(HAND_AP), abs=1e-12)
    assert roc_auc_macro(Y, S) == pytest.approx(np.mean(HAND_ROC), abs=1e-12)
    assert pr_auc_micro(Y, S) == pytest.approx(11 / 15, abs=1e-12)
    assert roc_auc_micro(Y, S) == pytest.approx(23 / 32, abs=1e-12)


def test_vectorised_scorer_hand_computed() -> None:
    ap, roc = bootstrap_tag_scores(Y, S, np.ones((1, 4), dtype=np.int64))
    np.testing.assert_allclose(ap[0], HAND_AP, atol=1e-12)
    np.testing.assert_allclose(roc[0], HAND_ROC, atol=1e-12)
    # draw track 0 twice and drop track 3: tag 0 ranks P P N P -> AP = (1/3)(1 + 1 + 3/4)
    ap, _ = bootstrap_tag_scores(Y, S, np.array([[2, 1, 1, 0]]))
    assert ap[0, 0] == pytest.approx((1 + 1 + 3 / 4) / 3, abs=1e-12)


# ------------------------------------------------------------------------------------------ sklearn equality
@pytest.mark.parametrize("ties", [False, True])
def test_equals_sklearn(ties: bool) -> None:
    y, s = _random(ties=ties)
    assert pr_auc_macro(y, s) == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    assert roc_auc_macro(y, s) == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert pr_auc_micro(y, s) == pytest.approx(average_precision_score(y, s, average="micro"), abs=1e-12)
    assert roc_auc_micro(y, s) == pytest.approx(roc_auc_score(y, s, average="micro"), abs=1e-12)
    result = focaltag.evaluate(y, s)
    assert list(result)[:4] == ["ROC-AUC-macro", "PR-AUC-macro", "ROC-AUC-micro", "PR-AUC-micro"]
    assert result["PR-AUC-macro"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_vectorised_equals_sklearn_on_same_resamples(ties: bool) -> None:
    y, s = _random(n=200, t=5, seed=3, ties=ties)
    idx = resample_indices(len(y), 6, seed=11)
    ap, roc = bootstrap_tag_scores(y, s, resample_weights(idx, len(y)))
    for b in range(len(idx)):
        yb, sb = y[idx[b]], s[idx[b]]
        for j in range(y.shape[1]):
            if 0 < yb[:, j].sum() < len(yb):
                assert ap[b, j] == pytest.approx(average_precision_score(yb[:, j], sb[:, j]), abs=1e-12)
                assert roc[b, j] == pytest.approx(roc_auc_score(yb[:, j], sb[:, j]), abs=1e-12)
            else:
                assert np.isnan(ap[b, j]) and np.isnan(roc[b, j])


def test_resample_weights_count_draws() -> None:
    w = resample_weights(np.array([[0, 0, 2, 3], [1, 1, 1, 1]]), 4)
    np.testing.assert_array_equal(w, [[2, 0, 1, 1], [0, 4, 0, 0]])
    np.testing.assert_array_equal(resample_indices(50, 3, seed=5), resample_indices(50, 3, seed=5))


def test_decision_scores_equal_sklearn_per_tag() -> None:
    y, s = _random(seed=4)
    d = s > 0.7
    per_tag = decision_tag_scores(y, d, np.ones((1, len(y)), dtype=np.int64))
    p, r, f, _ = precision_recall_fscore_support(y, d, average=None, zero_division=0)
    np.testing.assert_allclose(per_tag["precision"][0], p, atol=1e-12)
    np.testing.assert_allclose(per_tag["recall"][0], r, atol=1e-12)
    np.testing.assert_allclose(per_tag["F-score"][0], f, atol=1e-12)


# ------------------------------------------------------------------------------------------ bootstrap / compare
def test_evaluate_bootstrap_ci_is_seeded_and_brackets_estimate() -> None:
    y, s = _random(n=400, seed=1)
    a = evaluate(y, s, bootstrap=200, seed=7)
    b = evaluate(y, s, bootstrap=200, seed=7)
    c = evaluate(y, s, bootstrap=200, seed=8)
    assert a["ci"] == b["ci"]
    assert a["ci"]["intervals"] != c["ci"]["intervals"]
    assert a["ci"]["resamples"] == 200 and a["ci"]["level"] == 0.95
    assert a["ci"]["method"].startswith("normal")
    for metric in ("ROC-AUC-macro", "PR-AUC-macro"):
        lo, hi = a["ci"]["intervals"][metric]
        assert lo < a[metric] < hi
        assert a[metric] - lo == pytest.approx(hi - a[metric], abs=1e-12)  # centred on the estimate


def test_normal_interval_is_point_plus_minus_z_se() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan])  # sd (ddof=1) of 1..4 = 1.2909944
    lo, hi = normal_interval(0.5, values * 0.01)
    assert lo == pytest.approx(0.5 - 1.959964 * 0.012909944, abs=1e-6)
    assert hi == pytest.approx(0.5 + 1.959964 * 0.012909944, abs=1e-6)
    assert normal_interval(0.5, values * 0.01, level=0.5)[1] == pytest.approx(0.5 + 0.6744898 * 0.012909944)
    # clipped to the metric's range, still containing the point
    assert normal_interval(0.99, values * 0.01) == [pytest.approx(0.99 - 1.959964 * 0.012909944), 1.0]
    assert normal_interval(0.0, values * 0.01)[0] == 0.0
    assert normal_interval(0.9, values, bounds=(-1.0, 1.0)) == [-1.0, 1.0]
    assert np.isnan(normal_interval(0.5, np.array([1.0, np.nan]))).all()
    assert bootstrap_se(np.array([2.0, 4.0])) == pytest.approx(np.sqrt(2.0))


def test_bootstrap_se_matches_sklearn_on_the_resamples() -> None:
    """The interval's half-width is z times the SD of sklearn's macro scores on the drawn resamples."""
    y, s = _random(n=150, seed=11)
    result = evaluate(y, s, bootstrap=30, seed=4)
    idx = resample_indices(len(y), 30, seed=4)
    for metric, fn in (("PR-AUC-macro", average_precision_score), ("ROC-AUC-macro", roc_auc_score)):
        reps = [fn(y[i], s[i], average="macro") for i in idx]
        lo, hi = result["ci"]["intervals"][metric]
        assert (hi - lo) / 2 == pytest.approx(1.959964 * np.std(reps, ddof=1), rel=1e-5)


def test_every_interval_contains_its_estimate_groups_and_decisions_too() -> None:
    y, s = _random(n=120, seed=12)
    names = [f"t{j}" for j in range(y.shape[1])]
    result = evaluate(y, s, tag_names=names, bootstrap=50, thresholds=np.full(y.shape[1], 0.6),
                      train_counts=np.arange(y.shape[1]) * 150, groups={"odd": names[1::2]})
    assert len(result["ci"]["intervals"]) == 5
    for metric, (lo, hi) in result["ci"]["intervals"].items():
        assert lo <= result[metric] <= hi, metric
    for gname, g in result["groups"].items():
        for metric in ("PR-AUC", "ROC-AUC"):
            if g[metric] is not None:
                lo, hi = g["ci"][metric]
                assert lo <= g[metric] <= hi, (gname, metric)


def test_percentile_interval_matches_numpy() -> None:
    values = np.arange(101, dtype=float)
    assert percentile_interval(values) == pytest.approx([2.5, 97.5])
    assert percentile_interval(np.array([np.nan, 1.0, 3.0]), level=0.5) == pytest.approx([1.5, 2.5])


def test_paired_bootstrap_identical_and_clearly_different() -> None:
    y, s = _random(n=400, seed=2)
    same = paired_bootstrap(y, s, s, n_resamples=100, seed=0)
    for stats in same.values():
        assert stats["diff"] == 0.0 and stats["ci"] == [0.0, 0.0] and stats["p_value"] == 1.0
    noise = np.random.default_rng(9).random(s.shape)
    diff = paired_bootstrap(y, noise, s, n_resamples=200, seed=0)
    for name, stats in diff.items():
        assert stats["B"] == pytest.approx(evaluate(y, s)[name], abs=1e-12)
        assert stats["diff"] < 0 and stats["ci"][1] < 0 and stats["p_value"] < 0.02


# ------------------------------------------------------------------------------------------ thresholds
def test_best_f_threshold_hand_example() -> None:
    # scores 0.9 .8 .7 .4 .2 with labels 1 1 0 1 0: F at >=.9 .5, >=.8 .8, >=.7 .667, >=.4 6/7, >=.2 .75
    y = np.array([[1], [1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.4], [0.2]])
    thr = best_f_thresholds(y, s)
    assert thr.tolist() == [0.4]
    # the official rule is strict: the track whose score defined the threshold is left out
    np.testing.assert_array_equal(apply_thresholds(s, thr)[:, 0], [True, True, True, False, False])
    np.testing.assert_array_equal(apply_thresholds(s, thr, "ge")[:, 0], [True, True, True, True, False])
    dm = decision_metrics(y, apply_thresholds(s, thr, "ge"))
    assert dm["precision-macro"] == pytest.approx(3 / 4) and dm["recall-macro"] == 1.0
    assert dm["F-score-macro"] == pytest.approx(6 / 7) and dm["F-score-micro"] == pytest.approx(6 / 7)
    dm = decision_metrics(y, apply_thresholds(s, thr))  # 2 of 3 positives, 1 false positive: F = 2/3
    assert dm["precision-macro"] == pytest.approx(2 / 3) and dm["recall-macro"] == pytest.approx(2 / 3)


def test_tag_without_positives_gets_infinite_threshold(caplog: pytest.LogCaptureFixture) -> None:
    y = np.array([[1, 0], [0, 0], [1, 0]])
    with caplog.at_level(logging.WARNING):
        thr = best_f_thresholds(y, np.array([[0.9, 0.1], [0.2, 0.3], [0.5, 0.2]]), tag_names=["a", "b"])
    assert np.isinf(thr[1]) and "'b'" in caplog.text


def test_evaluate_with_thresholds_matches_sklearn() -> None:
    y, s = _random(seed=6)
    thr = best_f_thresholds(y, s)
    for rule, d in (("gt", s > thr), ("ge", s >= thr)):
        result = evaluate(y, s, thresholds=thr, **({} if rule == "gt" else {"decision_rule": rule}))
        assert result["decision_rule"] == rule
        for average in ("macro", "micro"):
            p, r, f, _ = precision_recall_fscore_support(y, d, average=average, zero_division=0)
            assert result[f"precision-{average}"] == pytest.approx(p)
            assert result[f"recall-{average}"] == pytest.approx(r)
            assert result[f"F-score-{average}"] == pytest.approx(f)


def test_thresholds_tsv_round_trip(tmp_path) -> None:
    values = {"mood/theme---happy": 0.123456789012345, "mood/theme---sad": float("inf")}
    path = tmp_path / "thr.tsv"
    save_thresholds(path, values)
    assert path.read_text().splitlines()[0] == "mood/theme---happy\t0.123456789012345"
    assert load_thresholds(path) == values
    path.write_text("tag\tthreshold\n# comment\nhappy\t0.5\n\n")
    assert load_thresholds(path) == {"happy": 0.5}
    path.write_text("happy\tlow\n")
    with pytest.raises(EvaluationError, match="line 1"):
        load_thresholds(path)
    with pytest.raises(EvaluationError, match="not found"):
        load_thresholds(tmp_path / "missing.tsv")


# ------------------------------------------------------------------------------------------ groups
def test_frequency_groups_boundaries() -> None:
    names = ["a", "b", "c", "d", "e"]
    groups = frequency_groups([551, 550, 201, 200, 0], names)
    assert groups == {"head": ["a"], "middle": ["b", "c"], "tail": ["d", "e"]}
    assert frequency_groups([551, 550, 201, 200, 0], names, thresholds=(100, 0))["tail"] == ["e"]
    assert parse_group_thresholds("550,200") == (550, 200)
    for bad in ("550", "200,550", "a,b"):
        with pytest.raises(ConfigError):
            parse_group_thresholds(bad)


def test_custom_groups_yaml_and_group_means(tmp_path) -> None:
    names = ["mood/theme---happy", "mood/theme---sad", "mood/theme---calm"]
    path = tmp_path / "groups.yaml"
    path.write_text("positive: [happy, calm]\nnegative: [mood/theme---sad]\n")
    groups = load_groups(path, names)
    assert groups == {"positive": ["mood/theme---happy", "mood/theme---calm"], "negative": ["mood/theme---sad"]}
    y, s = _random(t=3, seed=5)
    result = evaluate(y, s, tag_names=names, groups=groups, train_counts={"happy": 900, "sad": 300, "calm": 10})
    ap, roc = per_tag_scores(y, s)
    assert result["groups"]["positive"]["PR-AUC"] == pytest.approx((ap[0] + ap[2]) / 2)
    assert result["groups"]["head"]["tags"] == ["mood/theme---happy"]
    assert result["groups"]["tail"]["ROC-AUC"] == pytest.approx(roc[2])
    path.write_text("positive: [hapy]\n")
    with pytest.raises(ConfigError, match="unknown tag 'hapy'"):
        load_groups(path, names)


def test_count_training_tags_sums_files_and_ignores_empty_tags(tmp_path) -> None:
    names = ["mood/theme---happy", "mood/theme---sad"]
    official = tmp_path / "train.tsv"
    official.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
                        "track_1\ta\tb\t01/1.mp3\t30.0\tmood/theme---happy\tmood/theme---sad\n"
                        "track_2\ta\tb\t02/2.mp3\t30.0\tmood/theme---happy\n")
    extra = tmp_path / "extra.tsv"
    extra.write_text("TRACK_ID\tPATH\tTAGS\t\nx1\tA/A/x1\tmood/theme---sad\t\nx2\tA/A/x2\tmood/theme---other\t\n")
    np.testing.assert_array_equal(count_training_tags([official, extra], names), [2, 2])


# ------------------------------------------------------------------------------------------ ensembles
def test_mean_and_weighted_ensemble() -> None:
    a, b = np.random.default_rng(0).random((2, 10, 3)).astype(np.float32)
    np.testing.assert_array_equal(mean_ensemble([a, b]), np.mean(np.stack([a, b]), axis=0))
    np.testing.assert_allclose(weighted_ensemble([a, b], [3, 1]), 0.75 * a + 0.25 * b, rtol=1e-6)
    np.testing.assert_array_equal(weighted_ensemble([a, b], [1, 0]), a)
    with pytest.raises(ConfigError, match=">= 0"):  # the one weights rule of model ensembles
        weighted_ensemble([a, b], [1, -1])
    with pytest.raises(EvaluationError, match="shape"):
        mean_ensemble([a, b[:5]])


def test_optimize_weights_prefers_informative_member() -> None:
    y, good = _random(seed=8)
    noise = np.random.default_rng(1).random(good.shape).astype(np.float32)
    w, score = optimize_weights(y, [noise, good])
    assert w[1] > w[0] and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert score >= pr_auc_macro(y, mean_ensemble([noise, good])) - 1e-12
    assert score == pytest.approx(pr_auc_macro(y, weighted_ensemble([noise, good], w)), abs=1e-9)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), r"shape \(4, 3\) but ground_truth has shape \(4, 2\)"),
        (Y, np.where(S > 0.85, np.nan, S), "NaN/inf"),
        (Y, np.where(S > 0.85, np.inf, S), "NaN/inf"),
        (Y * 2, S, "only 0 and 1, got 2"),
        (Y[:, 0], S[:, 0], "must be 2-D"),
        (Y.astype(str), S, "numeric"),
    ],
)
def test_bad_input_one_line_error(y, s, match) -> None:
    with pytest.raises(EvaluationError, match=match) as info:
        evaluate(y, s)
    assert "\n" not in str(info.value)


def test_tag_without_positives_is_excluded_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    y, s = _random(seed=7)
    y[:, 2] = 0
    names = [f"t{j}" for j in range(y.shape[1])]
    with caplog.at_level(logging.WARNING):
        result = evaluate(y, s, tag_names=names, per_tag=True, bootstrap=20)
    assert "'t2'" in caplog.text and "excluded" in caplog.text
    assert result["excluded_tags"] == ["t2"]
    keep = [0, 1, 3, 4, 5]
    assert result["PR-AUC-macro"] == pytest.approx(average_precision_score(y[:, keep], s[:, keep]), abs=1e-12)
    assert result["per_tag"]["t2"]["PR-AUC"] is None and result["per_tag"]["t2"]["positives"] == 0
    assert result["ROC-AUC-micro"] == pytest.approx(roc_auc_score(y, s, average="micro"), abs=1e-12)


def test_paired_p_value_ignores_a_shared_bootstrap_bias() -> None:
    """A resampling bias that shifts every d* must not change the p-value; only the spread matters."""
    from focaltag.evaluation.bootstrap import _two_sided_p

    rng = np.random.default_rng(0)
    spread = rng.normal(0.0, 0.01, size=2000)
    p_unbiased = _two_sided_p(-0.0178 + spread, -0.0178)
    p_biased = _two_sided_p(-0.0178 + 0.03 + spread, -0.0178)  # d* pushed across zero by a bias
    assert p_unbiased == p_biased
    # |d| = 1.78 standard deviations: two-sided normal p ~ 0.075
    assert 0.05 < p_unbiased < 0.10
    assert _two_sided_p(spread, 0.0) == 1.0
