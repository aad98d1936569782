"""Prediction-level ensembles: the paper's arithmetic mean, a weighted mean, and non-negative weights that
maximise validation macro PR-AUC (coordinate search on the probability simplex)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from focaltag.errors import EvaluationError

__all__ = ["mean_ensemble", "weighted_ensemble", "optimize_weights"]

logger = logging.getLogger(__name__)

_STEPS = (0.2, 0.1, 0.05, 0.02, 0.01)


def _stack(predictions: Sequence[object], names: Sequence[str] | None = None) -> list[np.ndarray]:
    from focaltag.evaluation.metrics import check_predictions

    if len(predictions) < 1:
        raise EvaluationError("an ensemble needs at least one prediction matrix")
    names = list(names) if names is not None else [f"predictions[{i}]" for i in range(len(predictions))]
    if len(names) != len(predictions):
        raise EvaluationError(f"got {len(names)} names for {len(predictions)} prediction matrices")
    mats = [check_predictions(p, name=n) for p, n in zip(predictions, names, strict=True)]
    for mat, name in zip(mats[1:], names[1:], strict=True):
        if mat.shape != mats[0].shape:
            raise EvaluationError(f"{name} has shape {mat.shape} but {names[0]} has shape {mats[0].shape}; "
                                  "ensemble members must score the same tracks and tags")
    return mats


def mean_ensemble(predictions: Sequence[object], *, names: Sequence[str] | None = None) -> np.ndarray:
    """Arithmetic mean of member prediction matrices, the paper's ensemble exactly as its code computes it
    (``np.mean`` over a stacked axis); weighted means go through the tagger's rule (:func:`weighted_ensemble`)."""
    return np.mean(np.stack(_stack(predictions, names)), axis=0)


def weighted_ensemble(predictions: Sequence[object], weights: Sequence[float], *,
                      names: Sequence[str] | None = None) -> np.ndarray:
    """Weighted mean of member matrices (weights are normalised to sum 1)."""
    # the one weights rule (ConfigError) and the one combination rule, as in tagging; imported here, so that
    # importing focaltag.evaluation (the CLI builds its parser with it) does not import torch
    from focaltag.models.ensemble import check_weights, mean_probabilities

    mats = _stack(predictions, names)
    w = check_weights(weights, len(mats), "weights")
    out = mean_probabilities((m.astype(np.float64) for m in mats), w)
    return np.asarray(out).astype(np.result_type(*mats), copy=False)


def _macro_ap_fast(y: np.ndarray, s: np.ndarray, cols: np.ndarray) -> float:
    """Macro PR-AUC over ``cols`` with the vectorised scorer (one all-ones resample): equals sklearn."""
    from focaltag.evaluation.bootstrap import bootstrap_tag_scores

    ap, _ = bootstrap_tag_scores(y, s, np.ones((1, y.shape[0]), dtype=np.int64), tags=cols)
    return float(np.mean(ap[0, cols]))


def optimize_weights(y_true: object, predictions: Sequence[object], *,
                     names: Sequence[str] | None = None, steps: Sequence[float] = _STEPS,
                     max_rounds: int = 25) -> tuple[np.ndarray, float]:
    """Non-negative weights (sum 1) maximising macro PR-AUC on ``y_true``; returns (weights, score).

    Starts from the plain mean and repeatedly moves ``step`` of weight from one member to another while
    that improves the score, with shrinking steps: deterministic, derivative-free (PR-AUC is piecewise
    constant in the weights), and never worse than the mean on the data it is fitted to.
    """
    from focaltag.evaluation.metrics import check_ground_truth, undefined_tags

    mats = _stack(predictions, names)
    y = check_ground_truth(y_true, name="validation ground truth")
    if y.shape != mats[0].shape:
        raise EvaluationError(f"validation ground truth has shape {y.shape} but the validation predictions "
                              f"have shape {mats[0].shape}; expected the same (n_tracks, n_tags)")
    cols = np.flatnonzero(~undefined_tags(y))
    if cols.size == 0:
        raise EvaluationError("validation ground truth has no tag with both positives and negatives")
    stack = np.stack(mats).astype(np.float64)
    k = len(mats)
    w = np.full(k, 1.0 / k)

    def score(weights: np.ndarray) -> float:
        return _macro_ap_fast(y, np.tensordot(weights, stack, axes=1), cols)

    best = score(w)
    if k == 1:
        return np.round(w, 12), best
    for step in steps:
        for _ in range(max_rounds):
            improved = False
            for i in range(k):
                for j in range(k):
                    if i == j or w[j] <= 0:
                        continue
                    moved = min(step, w[j])
                    cand = w.copy()
                    cand[i] += moved
                    cand[j] -= moved
                    value = score(cand)
                    if value > best + 1e-12:
                        w, best, improved = cand, value, True
            if not improved:
                break
        logger.debug("ensemble weights after step %.3f: %s (PR-AUC-macro %.6f)", step, w.round(4), best)
    return np.round(w, 12), best
