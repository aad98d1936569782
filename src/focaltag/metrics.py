"""MediaEval-exact ranking metrics: scikit-learn's ``average_precision_score`` / ``roc_auc_score`` on
track-level (n_tracks, n_tags) matrices, with input checks and an explicit rule for undefined tags.

The MediaEval task's ``evaluate.py`` (MTG/mtg-jamendo-dataset, ``scripts/mediaeval/evaluate.py``) calls
``roc_auc_score`` and ``average_precision_score`` with ``average='macro'`` and ``'micro'``; the paper's tables
use the same calls. scikit-learn refuses (ROC-AUC) or returns a meaningless value (PR-AUC) for a tag with no
positive (or no negative) track in the evaluated split, so such tags are named in a warning and left out of
the macro averages; micro averages pool every tag and stay defined.

This module sits below every stage (it needs only numpy, scikit-learn and ``focaltag.errors``): training's
per-epoch validation scores and ``focaltag evaluate`` use the same code, so they cannot drift apart.
``focaltag.evaluation.metrics`` re-exports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from focaltag.errors import EvaluationError

__all__ = [
    "check_matrices",
    "check_ground_truth",
    "check_predictions",
    "undefined_tags",
    "per_tag_scores",
    "pr_auc_macro",
    "roc_auc_macro",
    "pr_auc_micro",
    "roc_auc_micro",
    "micro_scores",
    "macro_scores",
]

logger = logging.getLogger(__name__)


def _as_2d(x: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise EvaluationError(f"{name} cannot be read as a numeric matrix ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise EvaluationError(f"{name} must be a numeric (n_tracks, n_tags) matrix, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise EvaluationError(f"{name} must be 2-D (n_tracks, n_tags), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EvaluationError(f"{name} is empty (shape {arr.shape}); expected at least one track and one tag")
    return arr


def _where(mask: np.ndarray, tag_names: Sequence[str] | None) -> str:
    i, j = (int(v) for v in np.argwhere(mask)[0])
    tag = tag_names[j] if tag_names is not None and j < len(tag_names) else f"column {j}"
    return f"track row {i}, tag {tag!r}"


def check_ground_truth(y_true: object, *, name: str = "ground_truth",
                       tag_names: Sequence[str] | None = None) -> np.ndarray:
    """Validate a 0/1 label matrix and return it as int64 (bool, int or float 0/1 are accepted)."""
    arr = _as_2d(y_true, name)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        first = arr[bad][0].item()
        raise EvaluationError(f"{name} must contain only 0 and 1, got {first!r} at {_where(bad, tag_names)} "
                              f"({int(bad.sum())} such values); pass a binary multi-hot matrix")
    return arr.astype(np.int64)


def check_predictions(y_score: object, *, name: str = "predictions",
                      tag_names: Sequence[str] | None = None) -> np.ndarray:
    """Validate a finite score matrix (float32 stays float32, so ties are exactly those of the file)."""
    arr = _as_2d(y_score, name)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise EvaluationError(f"{name} contains {int(bad.sum())} NaN/inf values (first at "
                              f"{_where(bad, tag_names)}); expected finite scores, e.g. sigmoid outputs")
    return arr


def check_matrices(y_true: object, y_score: object, *, tag_names: Sequence[str] | None = None,
                   names: tuple[str, str] = ("ground_truth", "predictions")) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ground-truth / prediction pair: same 2-D shape, finite scores, 0/1 labels."""
    y_true_arr = _as_2d(y_true, names[0])
    y_score_arr = _as_2d(y_score, names[1])
    if y_true_arr.shape != y_score_arr.shape:
        raise EvaluationError(f"{names[1]} has shape {y_score_arr.shape} but {names[0]} has shape "
                              f"{y_true_arr.shape}; expected the same (n_tracks, n_tags)")
    if tag_names is not None and len(tag_names) != y_true_arr.shape[1]:
        raise EvaluationError(f"tag_names has {len(tag_names)} names but the matrices have "
                              f"{y_true_arr.shape[1]} columns; pass one name per column")
    return (check_ground_truth(y_true_arr, name=names[0], tag_names=tag_names),
            check_predictions(y_score_arr, name=names[1], tag_names=tag_names))


def undefined_tags(y_true: np.ndarray, *, tag_names: Sequence[str] | None = None,
                   warn: bool = True) -> np.ndarray:
    """Boolean mask of tags without positives (or without negatives); warns once per tag naming it."""
    pos = y_true.sum(axis=0)
    mask = (pos == 0) | (pos == y_true.shape[0])
    if warn:
        names = tag_names if tag_names is not None else [f"column {j}" for j in range(y_true.shape[1])]
        for j in np.flatnonzero(mask).tolist():
            what = "no positive" if pos[j] == 0 else "no negative"
            logger.warning("tag %r has %s track in the evaluated split; its PR-AUC/ROC-AUC are undefined, "
                           "so it is excluded from the macro averages", names[j], what)
    return mask


def per_tag_scores(y_true: object, y_score: object, *,
                   tag_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-tag (PR-AUC, ROC-AUC) from scikit-learn; NaN for tags undefined in this split (no warning)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = check_matrices(y_true, y_score, tag_names=tag_names)
    ok = ~undefined_tags(y, warn=False)
    ap = np.full(y.shape[1], np.nan)
    auc = np.full(y.shape[1], np.nan)
    if ok.any():
        ap[ok] = np.atleast_1d(average_precision_score(y[:, ok], s[:, ok], average=None))
        auc[ok] = np.atleast_1d(roc_auc_score(y[:, ok], s[:, ok], average=None))
    return ap, auc


def _macro(y_true: object, y_score: object, which: int, tag_names: Sequence[str] | None) -> float:
    y, s = check_matrices(y_true, y_score, tag_names=tag_names)
    undefined = undefined_tags(y, tag_names=tag_names)
    if undefined.all():
        raise EvaluationError("no tag has both positive and negative tracks in the evaluated split; "
                              "macro PR-AUC/ROC-AUC are undefined")
    scores = per_tag_scores(y, s)[which]
    return float(np.mean(scores[~undefined]))


def pr_auc_macro(y_true: object, y_score: object, *, tag_names: Sequence[str] | None = None) -> float:
    """Macro PR-AUC = sklearn ``average_precision_score(average='macro')`` over the defined tags."""
    return _macro(y_true, y_score, 0, tag_names)


def roc_auc_macro(y_true: object, y_score: object, *, tag_names: Sequence[str] | None = None) -> float:
    """Macro ROC-AUC = sklearn ``roc_auc_score(average='macro')`` over the defined tags."""
    return _macro(y_true, y_score, 1, tag_names)


def micro_scores(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(PR-AUC-micro, ROC-AUC-micro) of validated matrices: every label pooled, as MediaEval does."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    total = int(y.sum())
    if total == 0 or total == y.size:
        raise EvaluationError("micro PR-AUC/ROC-AUC need at least one positive and one negative label; "
                              f"the ground truth has {total} positives out of {y.size}")
    return (float(average_precision_score(y, s, average="micro")),
            float(roc_auc_score(y, s, average="micro")))


def pr_auc_micro(y_true: object, y_score: object) -> float:
    """Micro PR-AUC: sklearn ``average_precision_score(average='micro')`` (all labels pooled)."""
    return micro_scores(*check_matrices(y_true, y_score))[0]


def roc_auc_micro(y_true: object, y_score: object) -> float:
    """Micro ROC-AUC: sklearn ``roc_auc_score(average='micro')`` (all labels pooled)."""
    return micro_scores(*check_matrices(y_true, y_score))[1]


def macro_scores(y_true: object, y_score: object) -> dict[str, float]:
    """Macro PR-AUC / ROC-AUC over the tags defined in this split, without warnings, and NaN (not an error)
    when no tag is defined: training validates every epoch on splits that can be tiny (demos, smoke tests)."""
    y, s = check_matrices(y_true, y_score)
    ok = ~undefined_tags(y, warn=False)
    if not ok.any():
        return {"pr_auc": float("nan"), "roc_auc": float("nan"), "tags_scored": 0}
    ap, auc = per_tag_scores(y, s)
    return {"pr_auc": float(np.mean(ap[ok])), "roc_auc": float(np.mean(auc[ok])), "tags_scored": int(ok.sum())}
