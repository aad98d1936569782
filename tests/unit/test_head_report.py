"""Cross-validating a head (`focaltag.library.heads.cross_validate_head`): scores, intervals, thresholds and the
comparison with BCE, each recomputed here with scikit-learn."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from focaltag.errors import DataError
from focaltag.evaluation.bootstrap import resample_indices
from focaltag.library.heads import cross_validate_head, per_tag_intervals
from focaltag.training.head import HeadOptions, cross_val_predict

TAGS = ("a", "b", "c")
OPTIONS = HeadOptions(loss="cb-focal", folds=3, steps=120, hidden_sizes=(0, 8))


def data(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.4, 0.15, 0.08]).astype(np.int8)
    y[:4, 2] = 1
    x = y @ rng.normal(size=(3, 6)) * 2 + rng.normal(size=(n, 6))
    return x.astype(np.float32), y


def macro(metric, y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([metric(y[:, j], p[:, j]) for j in range(y.shape[1])]))


@pytest.fixture(scope="module")
def report():
    x, y = data()
    return x, y, cross_validate_head(x, y, TAGS, OPTIONS, bootstrap=100)


def test_scores_are_sklearns_on_the_out_of_fold_predictions(report):
    x, y, r = report
    np.testing.assert_array_equal(r.oof, cross_val_predict(x, y, r.folds, hidden_dim=r.hidden_dim, options=OPTIONS))
    assert r.hidden_dim in (0, 8) and r.candidates[r.hidden_dim] == max(r.candidates.values())
    assert r.metrics["PR-AUC-macro"] == pytest.approx(macro(average_precision_score, y, r.oof), abs=1e-12)
    assert r.metrics["ROC-AUC-macro"] == pytest.approx(macro(roc_auc_score, y, r.oof), abs=1e-12)
    for j, tag in enumerate(TAGS):
        assert r.metrics["per_tag"][tag]["PR-AUC"] == pytest.approx(average_precision_score(y[:, j], r.oof[:, j]))
    assert r.counts == {"a": int(y[:, 0].sum()), "b": int(y[:, 1].sum()), "c": int(y[:, 2].sum())}


def test_thresholds_are_the_official_choice_and_decide_with_greater_than(report):
    _, y, r = report
    for j in range(len(TAGS)):
        precision, recall, thr = precision_recall_curve(y[:, j], r.oof[:, j])
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.nan_to_num(2 * precision * recall / (precision + recall))
        assert r.thresholds[j] == thr[int(np.argmax(f[:-1]))]
    decisions = r.oof > r.thresholds
    assert r.metrics["F-score-macro"] == pytest.approx(f1_score(y, decisions, average="macro", zero_division=0))
    assert r.metrics["decision_rule"] == "gt"


def test_the_baseline_is_bce_on_the_same_folds_and_the_comparison_its_difference(report):
    x, y, r = report
    bce = cross_val_predict(x, y, r.folds, hidden_dim=r.hidden_dim, options=OPTIONS, loss="bce", sampling="standard")
    np.testing.assert_array_equal(r.baseline_oof, bce)
    diff = r.comparison["PR-AUC-macro"]
    assert diff["diff"] == pytest.approx(macro(average_precision_score, y, r.oof)
                                         - macro(average_precision_score, y, bce), abs=1e-12)
    assert diff["ci"][0] <= diff["diff"] <= diff["ci"][1] and 0 <= diff["p_value"] <= 1
    card = r.to_dict()
    assert card["loss"] == "cb_focal" and card["bce"]["loss"] == "bce" and r.compared_with_bce
    assert set(card["thresholds"]) == set(TAGS)


def test_bce_with_standard_sampling_is_its_own_baseline():
    x, y = data(n=60, seed=1)
    r = cross_validate_head(x, y, TAGS, HeadOptions(loss="bce", folds=3, steps=60, hidden_sizes=(0,)), bootstrap=50)
    assert r.baseline_oof is r.oof and not r.compared_with_bce
    assert r.comparison["PR-AUC-macro"]["diff"] == 0.0


def test_per_tag_intervals_match_a_bootstrap_computed_with_sklearn():
    x, y = data(n=70, seed=2)
    rng = np.random.default_rng(3)
    scores = np.clip(y * 0.3 + rng.random(y.shape) * 0.7, 0, 1)
    n_resamples = 40
    got = per_tag_intervals(y, scores, n_resamples=n_resamples, seed=5)
    z = NormalDist().inv_cdf(0.975)
    for j in range(len(TAGS)):
        reps = []
        for idx in resample_indices(len(y), n_resamples, seed=5):
            if 0 < y[idx, j].sum() < len(idx):
                reps.append(average_precision_score(y[idx, j], scores[idx, j]))
        point = average_precision_score(y[:, j], scores[:, j])
        se = float(np.std(reps, ddof=1))
        expected = [max(0.0, point - z * se), min(1.0, point + z * se)]
        np.testing.assert_allclose(got["PR-AUC"][j], expected, rtol=1e-9, atol=1e-12)


def test_labels_that_cannot_be_cross_validated_are_refused():
    x, y = data(n=60)
    y[:, 2] = 0
    y[:2, 2] = 1
    with pytest.raises(DataError, match="fewer positive tracks than the 3 folds: 'c' \\(2\\)"):
        cross_validate_head(x, y, TAGS, OPTIONS)
    with pytest.raises(DataError, match="3 tag names"):
        cross_validate_head(x, y[:, :2], TAGS, OPTIONS)


def test_the_embedding_cache_resumes_and_drops_changed_files(tmp_path):
    import os

    from focaltag.library.heads import _EmbeddingCache

    audio = tmp_path / "caf\udce9.flac"  # a name that is not UTF-8 survives the cache
    other = tmp_path / "b.flac"
    for f in (audio, other):
        f.write_bytes(b"x")
    cache = _EmbeddingCache(tmp_path / "work", "base-a", 3)
    cache.put(os.fspath(audio), np.array([1, 2, 3]))
    cache.put(os.fspath(other), np.array([4, 5, 6]))
    cache.save()
    again = _EmbeddingCache(tmp_path / "work", "base-a", 3)
    np.testing.assert_array_equal(again.get(os.fspath(audio)), [1, 2, 3])
    other.write_bytes(b"changed")  # another size: extracted again
    assert again.get(os.fspath(other)) is None
    assert _EmbeddingCache(tmp_path / "work", "base-b", 3).get(os.fspath(audio)) is None  # another base
    (again.path).write_bytes(b"not an npz")
    assert _EmbeddingCache(tmp_path / "work", "base-a", 3).get(os.fspath(audio)) is None  # damaged: start again
