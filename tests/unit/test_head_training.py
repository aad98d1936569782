"""Training a head on embeddings: stratified folds, out-of-fold predictions, the losses and samplers, selection.

Scores are checked against scikit-learn computed here, not against the module's own metric code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from focaltag.errors import ConfigError, DataError
from focaltag.training.head import (
    HeadOptions,
    cross_val_predict,
    fit_head,
    fold_seed,
    multilabel_folds,
    normalize_loss,
    predict_head,
    select_head_size,
)

FAST = HeadOptions(steps=60, batch_size=32, hidden_sizes=(0, 16))


def imbalanced(n: int = 200, dim: int = 12, seed: int = 0, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings where each tag shifts its own direction, tags from common to rare."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.4, 0.2, 0.1, 0.06])
    y = (rng.random((n, len(rates))) < rates).astype(np.int8)
    for j in range(len(rates)):  # at least 5 positives per tag
        y[rng.choice(n, 5, replace=False), j] = 1
    directions = rng.normal(size=(len(rates), dim))
    x = (y @ directions) * signal + rng.normal(size=(n, dim)) * 3 + 10.0
    return x.astype(np.float32), y


def sklearn_macro_ap(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([average_precision_score(y[:, j], p[:, j]) for j in range(y.shape[1])]))


def test_folds_partition_the_tracks_and_spread_every_tag():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 6)) < [0.4, 0.2, 0.1, 0.05, 0.03, 0.02]).astype(int)
    folds = multilabel_folds(y, 5, seed=0)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    per_fold = np.array([[y[folds == f, j].sum() for f in range(5)] for j in range(6)])
    assert (per_fold.max(axis=1) - per_fold.min(axis=1) <= 1).all()  # each tag's positives spread evenly
    np.testing.assert_array_equal(per_fold.sum(axis=1), y.sum(axis=0))
    np.testing.assert_array_equal(folds, multilabel_folds(y, 5, seed=0))  # deterministic
    assert not np.array_equal(folds, multilabel_folds(y, 5, seed=1))


def test_folds_refuse_too_few_tracks():
    with pytest.raises(DataError, match="3 track\\(s\\) cannot be split into 5 folds"):
        multilabel_folds(np.eye(3), 5)
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        multilabel_folds(np.eye(3), 1)


def test_options_are_validated_and_cli_loss_spellings_accepted():
    assert HeadOptions(loss="cb-focal").loss == "cb_focal"
    assert normalize_loss("DB-Focal") == "db_focal"
    assert HeadOptions(hidden_sizes=(0, 0, 8)).hidden_sizes == (0, 8)
    for bad in ({"loss": "asl"}, {"sampling": "balanced"}, {"hidden_sizes": ()}, {"folds": 1}, {"lr": 0},
                {"drop_rate": 1.0}, {"seed": -1}, {"steps": 0}):
        with pytest.raises(ConfigError):
            HeadOptions(**bad)  # type: ignore[arg-type]


def test_fit_is_deterministic_and_seeded():
    x, y = imbalanced()
    a = fit_head(x, y, hidden_dim=16, options=FAST, seed=3).head
    b = fit_head(x, y, hidden_dim=16, options=FAST, seed=3).head
    c = fit_head(x, y, hidden_dim=16, options=FAST, seed=4).head
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.fc.weight, c.fc.weight)
    # the standardisation travels with the head: it is the training embeddings' mean and scale
    np.testing.assert_allclose(a.mean.numpy(), x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(a.scale.numpy(), x.std(axis=0), rtol=1e-4)


@pytest.fixture(scope="module")
def reference_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Embeddings, labels, folds and scikit-learn's one-vs-rest logistic regression's out-of-fold macro PR-AUC."""
    from sklearn.linear_model import LogisticRegression

    x, y = imbalanced(signal=5.0)
    folds = multilabel_folds(y, 4, seed=0)
    ref = np.zeros(y.shape)
    for f in range(4):
        test = folds == f
        for j in range(y.shape[1]):
            ref[test, j] = LogisticRegression(max_iter=2000).fit(x[~test], y[~test, j]).predict_proba(x[test])[:, 1]
    return x, y, folds, sklearn_macro_ap(y, ref)


@pytest.mark.parametrize("loss", ["bce", "focal", "cb_focal", "db_focal"])
@pytest.mark.parametrize("sampling", ["standard", "class-aware"])
def test_every_loss_and_sampling_learns_the_tags(loss: str, sampling: str, reference_data):
    x, y, folds, reference = reference_data
    oof = cross_val_predict(x, y, folds, options=HeadOptions(loss=loss, sampling=sampling))
    assert oof.shape == y.shape and ((oof > 0) & (oof < 1)).all()
    chance = float(np.mean(y.mean(axis=0)))
    assert reference > 4 * chance  # the data has signal an independent learner finds
    assert sklearn_macro_ap(y, oof) > 0.85 * reference


def test_out_of_fold_rows_come_from_a_head_that_never_saw_them():
    x, y = imbalanced(n=120)
    folds = multilabel_folds(y, 3, seed=0)
    oof = cross_val_predict(x, y, folds, hidden_dim=0, options=FAST)
    for f in range(3):
        test = folds == f
        fit = fit_head(x[~test], y[~test], hidden_dim=0, options=FAST, seed=fold_seed(FAST.seed, f))
        np.testing.assert_allclose(oof[test], predict_head(fit.head, x[test]), rtol=0, atol=1e-12)
    # a head trained on all rows predicts its training rows differently (it saw them)
    full = predict_head(fit_head(x, y, options=FAST).head, x)
    assert not np.allclose(full, oof)


def test_head_size_selection_takes_the_best_out_of_fold_macro_pr_auc():
    x, y = imbalanced(n=160)
    folds = multilabel_folds(y, 4, seed=0)
    best, results = select_head_size(x, y, folds, FAST)
    assert set(results) == {0, 16}
    for size, (score, oof) in results.items():
        assert score == pytest.approx(sklearn_macro_ap(y, oof), abs=1e-12)
        np.testing.assert_array_equal(oof, cross_val_predict(x, y, folds, hidden_dim=size, options=FAST))
    assert results[best][0] == max(score for score, _ in results.values())


def test_a_fold_without_positives_of_a_tag_still_trains_the_class_balanced_losses():
    x, y = imbalanced(n=80)
    y = y.copy()
    y[:, 3] = 0
    y[:2, 3] = 1
    fit = fit_head(x[10:], y[10:], options=FAST, loss="cb_focal")  # tag 3 has no positive left
    assert np.isfinite(predict_head(fit.head, x)).all()


def test_bad_embeddings_are_refused():
    with pytest.raises(DataError, match="same number of tracks"):
        fit_head(np.zeros((3, 4)), np.zeros((2, 1)))
    with pytest.raises(DataError, match="NaN or inf"):
        fit_head(np.full((3, 4), np.nan), np.zeros((3, 1)))
    with pytest.raises(DataError, match="only 0 and 1"):
        fit_head(np.zeros((3, 4)), np.full((3, 1), 2))
