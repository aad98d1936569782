"""Bootstrap intervals of the macro metrics, and the paired bootstrap behind ``focaltag compare``.

What an interval here is for: the estimand is the expected value of the metric on a random test set of the
same size from the same population (what a rerun on fresh tracks would give on average). The interval is
``point estimate +- z * SE``, with SE the standard deviation of the bootstrap replicates (resampling tracks
with replacement). It is centred on the point estimate, so it always contains it. Percentile intervals are not
used: resampling duplicates positive tracks, duplicated positives raise average precision, and the replicate
distribution of macro PR-AUC sits above the point estimate (on the authors' validation matrices the 95 %
percentile interval covered the subset mean in only 60-75 % of draws). ``bench/coverage.py`` measures the
coverage of the method used here on subsets of the published matrices.

Resampling tracks with replacement is the same as weighting each track by how often it was drawn, so one
resample is a row of integer counts. Per tag the scores are sorted once; for every resample the cumulative
counts along that order give, at each positive track, the weighted true/false positives above it, from which
average precision (sklearn's step-wise sum) and ROC-AUC (Mann-Whitney, ties counted half) follow for all
resamples at once. This equals calling scikit-learn on ``y[idx]``, ``s[idx]`` (tests check it) at a small
fraction of the cost of 2 x n_tags x n_resamples sklearn calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from focaltag.errors import EvaluationError
from focaltag.evaluation.thresholds import _prf

__all__ = [
    "resample_indices",
    "resample_weights",
    "bootstrap_tag_scores",
    "decision_tag_scores",
    "percentile_interval",
    "normal_interval",
    "se_interval",
    "bootstrap_se",
    "INTERVAL_METHOD",
    "bootstrap_macro",
    "paired_bootstrap",
    "MACRO_METRICS",
]

MACRO_METRICS = ("ROC-AUC-macro", "PR-AUC-macro")
_CHUNK = 128  # resamples per block: keeps the (chunk, n_tracks) count block in cache


def resample_indices(n_tracks: int, n_resamples: int, *, seed: int = 0) -> np.ndarray:
    """Track indices of each bootstrap resample, shape (n_resamples, n_tracks); fixed by ``seed``."""
    if n_resamples < 1:
        raise EvaluationError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_tracks, size=(n_resamples, n_tracks), dtype=np.int64)


def resample_weights(indices: np.ndarray, n_tracks: int) -> np.ndarray:
    """How often each track is drawn in each resample: (n_resamples, n_tracks) integer counts."""
    indices = np.asarray(indices)
    n_res = indices.shape[0]
    flat = (indices + n_tracks * np.arange(n_res)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_res * n_tracks).reshape(n_res, n_tracks)
    return counts.astype(_count_dtype(n_tracks))


def _count_dtype(max_total: int) -> type:
    if max_total < 2**15:
        return np.int16
    if max_total < 2**31:
        return np.int32
    return np.int64


def _tag_plan(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tag sort order and the segments of it that the positives' tie groups need (computed once).

    Only cumulative weights at tie-group boundaries of positive tracks are needed, so the sorted weights
    are summed per segment between those boundaries (``np.add.reduceat``) instead of a full cumulative sum.
    """
    n = len(s)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new_group[1:])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:] - 1, n - 1)
    pos_at = np.flatnonzero(y[order] == 1)  # positions of positives in sorted order
    g = group[pos_at]
    start, end = starts[g], ends[g]
    bounds = np.unique(np.concatenate([[0], start, end + 1]))
    bounds = bounds[bounds < n]
    return {
        "order": order, "pos_tracks": order[pos_at], "bounds": bounds,
        "seg_end": np.searchsorted(bounds, end, side="right") - 1,  # segment that ends at the group's end
        "seg_before": np.searchsorted(bounds, start) - 1,  # segment just before the group (-1: none)
        # index (within the positives) of the first / last positive sharing the same tie group
        "first": np.searchsorted(g, g, side="left"),
        "last": np.searchsorted(g, g, side="right") - 1,
    }


def _scores_for_plan(plan: dict[str, np.ndarray], w: np.ndarray,
                     total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and ROC-AUC of one tag for every weight row of ``w`` (n_rows, n_tracks), row sums ``total``."""
    seg = np.add.reduceat(np.take(w, plan["order"], axis=1), plan["bounds"], axis=1)
    cum = np.cumsum(seg, axis=1, dtype=np.float64)
    tot_end = cum[:, plan["seg_end"]]
    before = plan["seg_before"]
    tot_before = np.where(before >= 0, cum[:, np.maximum(before, 0)], 0.0)
    wp = w[:, plan["pos_tracks"]].astype(np.float64)
    cum_pos = np.cumsum(wp, axis=1)
    n_pos = cum_pos[:, -1]
    tps_end = cum_pos[:, plan["last"]]
    first = plan["first"]
    tps_before = np.where(first > 0, cum_pos[:, np.maximum(first - 1, 0)], 0.0)
    n_neg = total - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tot_end > 0, tps_end / tot_end, 0.0)
        ap = (wp * precision).sum(axis=1) / n_pos
        fps_mid = (tot_end - tps_end + tot_before - tps_before) / 2.0
        auc = (wp * (n_neg[:, None] - fps_mid)).sum(axis=1) / (n_pos * n_neg)
    undefined = (n_pos == 0) | (n_neg == 0)
    ap[undefined] = np.nan
    auc[undefined] = np.nan
    return ap, auc


def bootstrap_tag_scores(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray, *,
                         tags: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-resample, per-tag (PR-AUC, ROC-AUC), each (n_resamples, n_tags); NaN where a resample has no
    positive or no negative for a tag (and for tags not listed in ``tags``).

    Args:
        y_true (ndarray (n_tracks, n_tags)): validated 0/1 labels.
        y_score (ndarray (n_tracks, n_tags)): validated finite scores.
        weights (ndarray (n_resamples, n_tracks)): non-negative integer draw counts (``resample_weights``).
        tags (sequence of int, optional): columns to score. (Default: all)
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != y_true.shape[0]:
        raise EvaluationError(f"weights must have shape (n_resamples, {y_true.shape[0]}), got {weights.shape}")
    if not np.issubdtype(weights.dtype, np.integer) or (weights < 0).any():
        raise EvaluationError(f"weights must be non-negative integer draw counts, got dtype {weights.dtype}")
    totals = weights.sum(axis=1, dtype=np.int64)
    # float32 adds integers exactly below 2**24, and is the fastest type for the segment sums
    work_dtype = np.float32 if totals.max() < 2**24 else np.float64
    n_res, n_tags = weights.shape[0], y_true.shape[1]
    cols = np.arange(n_tags) if tags is None else np.asarray(tags, dtype=np.int64)
    ap = np.full((n_res, n_tags), np.nan)
    auc = np.full((n_res, n_tags), np.nan)
    plans = {int(j): _tag_plan(y_true[:, j], np.asarray(y_score[:, j], dtype=np.float64)) for j in cols}
    for lo in range(0, n_res, _CHUNK):
        block = np.ascontiguousarray(weights[lo:lo + _CHUNK], dtype=work_dtype)
        total = totals[lo:lo + _CHUNK].astype(np.float64)
        for j, plan in plans.items():
            if len(plan["pos_tracks"]) == 0:
                continue
            ap[lo:lo + len(block), j], auc[lo:lo + len(block), j] = _scores_for_plan(plan, block, total)
    return ap, auc


def decision_tag_scores(y_true: np.ndarray, decisions: np.ndarray,
                        weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per-resample, per-tag precision / recall / F-score of binary decisions (zero_division = 0, like
    sklearn's ``precision_recall_fscore_support(..., zero_division=0)``); each (n_resamples, n_tags)."""
    y = y_true.astype(np.float64)
    d = decisions.astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    tp = w @ (y * d)
    fp = w @ ((1.0 - y) * d)
    fn = w @ (y * (1.0 - d))
    precision, recall, fscore = _prf(tp, fp, fn)
    return {"precision": precision, "recall": recall, "F-score": fscore}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of bootstrap replicates (NaN replicates dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


INTERVAL_METHOD = "normal: point estimate +- z * bootstrap standard error (resampling tracks)"
"""``ci.method`` in the JSON of ``evaluate`` / ``compare`` / reports."""


def bootstrap_se(values: np.ndarray) -> float:
    """Standard deviation (ddof=1) of the finite bootstrap replicates; NaN with fewer than two."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size >= 2 else float("nan")


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)


def normal_interval(point: float, values: np.ndarray, level: float = 0.95, *,
                    bounds: tuple[float, float] = (0.0, 1.0)) -> list[float]:
    """``point +- z * SE`` (SE from the replicates ``values``), clipped to the metric's ``bounds``.

    Contains ``point`` by construction (clipping cannot remove it: the point lies within the bounds);
    ``[nan, nan]`` when the point or the SE is undefined.
    """
    return se_interval(point, bootstrap_se(values), level, bounds=bounds)


def se_interval(point: float, se: float, level: float = 0.95, *,
                bounds: tuple[float, float] = (0.0, 1.0)) -> list[float]:
    """``point +- z * se`` clipped to ``bounds``: :func:`normal_interval` from a known standard error, so the
    interval of a paired difference can be given at another level (e.g. a family's simultaneous level)."""
    _check_level(level)
    if not (np.isfinite(point) and np.isfinite(se)):
        return [float("nan"), float("nan")]
    half = _z(level) * se
    lo, hi = bounds
    return [float(max(lo, min(point, point - half))), float(min(hi, max(point, point + half)))]


def _macro_rows(per_tag: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row-wise mean over the kept tags, ignoring NaN (a resample that lost all positives of a tag)."""
    sub = per_tag[:, keep]
    counts = np.isfinite(sub).sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(sub, axis=1) / np.maximum(counts, 1), np.nan)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"confidence level must be in (0, 1), got {level}")


def bootstrap_macro(y_true: np.ndarray, y_score: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                    keep: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Replicates of the macro PR-AUC / ROC-AUC over ``keep`` tags, plus the per-resample weights used."""
    n_tracks, n_tags = y_true.shape
    keep = np.ones(n_tags, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    weights = resample_weights(resample_indices(n_tracks, n_resamples, seed=seed), n_tracks)
    ap, auc = bootstrap_tag_scores(y_true, y_score, weights, tags=np.flatnonzero(keep))
    reps = {"ROC-AUC-macro": _macro_rows(auc, keep), "PR-AUC-macro": _macro_rows(ap, keep),
            "_per_tag_PR-AUC": ap, "_per_tag_ROC-AUC": auc}
    return reps, weights


def _two_sided_p(diffs: np.ndarray, observed: float) -> float:
    """Two-sided p-value of "no difference": ``2 * (1 - Phi(|d| / SE))`` with the bootstrap SE of the
    paired differences, the test that matches the normal interval (p < 1 - level exactly when the interval
    excludes 0). Like the interval it does not use the replicates' location, which resampling biases upwards
    for average precision (duplicated positives)."""
    import math

    if observed == 0.0:
        return 1.0
    se = bootstrap_se(diffs)
    if not np.isfinite(se):
        return float("nan")
    z = abs(observed) / se if se > 0 else math.inf
    # erfc keeps the far tail accurate; floored at the smallest normal float so it stays a positive p-value
    return float(min(1.0, max(math.erfc(z / math.sqrt(2.0)), np.finfo(np.float64).tiny)))


def paired_bootstrap(y_true: object, score_a: object, score_b: object, *, n_resamples: int = 1000,
                     seed: int = 0, level: float = 0.95,
                     tag_names: Sequence[str] | None = None) -> dict[str, dict[str, float | list[float]]]:
    """Paired bootstrap of A - B for each macro metric: both models are scored on the same resamples.

    Returns ``{metric: {"A", "B", "diff", "se", "ci": [lo, hi], "p_value"}}`` for ``ROC-AUC-macro`` and
    ``PR-AUC-macro``; ``diff`` is A - B on the full data, ``se`` the bootstrap standard error of the paired
    difference, ``ci`` the normal interval ``diff +- z * se`` (see :data:`INTERVAL_METHOD`) and ``p_value``
    the matching two-sided p-value of a zero difference.
    """
    from focaltag.evaluation.metrics import check_matrices, per_tag_scores, undefined_tags

    _check_level(level)
    y, a = check_matrices(y_true, score_a, tag_names=tag_names, names=("ground_truth", "predictions A"))
    _, b = check_matrices(y, score_b, tag_names=tag_names, names=("ground_truth", "predictions B"))
    keep = ~undefined_tags(y, tag_names=tag_names)
    if not keep.any():
        raise EvaluationError("no tag has both positive and negative tracks; nothing to compare")
    full_a = per_tag_scores(y, a)
    full_b = per_tag_scores(y, b)
    weights = resample_weights(resample_indices(y.shape[0], n_resamples, seed=seed), y.shape[0])
    cols = np.flatnonzero(keep)
    boot_a = bootstrap_tag_scores(y, a, weights, tags=cols)
    boot_b = bootstrap_tag_scores(y, b, weights, tags=cols)
    out: dict[str, dict[str, float | list[float]]] = {}
    for name, k in (("ROC-AUC-macro", 1), ("PR-AUC-macro", 0)):
        va = float(np.mean(full_a[k][keep]))
        vb = float(np.mean(full_b[k][keep]))
        diffs = _macro_rows(boot_a[k], keep) - _macro_rows(boot_b[k], keep)
        out[name] = {"A": va, "B": vb, "diff": va - vb, "se": bootstrap_se(diffs),
                     "ci": normal_interval(va - vb, diffs, level, bounds=(-1.0, 1.0)),
                     "p_value": _two_sided_p(diffs, va - vb)}
    return out
