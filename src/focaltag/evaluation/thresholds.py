"""Per-tag decision thresholds, chosen as in the MediaEval task: the point of each tag's validation
precision-recall curve with the highest F-score; then precision / recall / F-score of the decisions.

MediaEval's ``calculate_decisions.py`` takes ``thresholds[argmax(F)]`` from sklearn's
``precision_recall_curve``. That curve's point ``k`` counts tracks with ``score >= thresholds[k]``, so
focaltag decides ``score >= threshold`` and the chosen F-score is exactly the one reached on validation (the
MediaEval script used ``>``, which differs only for scores exactly equal to a threshold).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from focaltag.errors import EvaluationError

__all__ = [
    "best_f_thresholds",
    "apply_thresholds",
    "decision_metrics",
    "save_thresholds",
    "load_thresholds",
    "thresholds_array",
]

logger = logging.getLogger(__name__)


def best_f_thresholds(y_true: object, y_score: object, *,
                      tag_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-tag threshold maximising F-score on (validation) data; ``inf`` (never on) for a tag without
    positives, with a warning naming it."""
    from sklearn.metrics import precision_recall_curve

    from focaltag.evaluation.metrics import check_matrices

    y, s = check_matrices(y_true, y_score, tag_names=tag_names)
    names = list(tag_names) if tag_names is not None else [f"column {j}" for j in range(y.shape[1])]
    out = np.full(y.shape[1], np.inf)
    for j in range(y.shape[1]):
        if not y[:, j].any():
            logger.warning("tag %r has no positive track in the threshold data; its threshold is set to inf "
                           "(never predicted)", names[j])
            continue
        precision, recall, thr = precision_recall_curve(y[:, j], s[:, j])
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.nan_to_num(2 * precision * recall / (precision + recall))
        out[j] = float(thr[int(np.argmax(f[:-1]))])  # the last curve point (recall 0) has no threshold
    return out


def thresholds_array(thresholds: Mapping[str, float] | Sequence[float] | np.ndarray,
                     tag_names: Sequence[str]) -> np.ndarray:
    """Thresholds in column order (a mapping may use full or short tag names; every tag needs one)."""
    if isinstance(thresholds, Mapping):
        from focaltag.data.tags import short_tag

        lookup = {**{short_tag(k): float(v) for k, v in thresholds.items()},
                  **{k: float(v) for k, v in thresholds.items()}}
        missing = [t for t in tag_names if t not in lookup and short_tag(t) not in lookup]
        if missing:
            raise EvaluationError(f"no threshold for {len(missing)} tag(s), e.g. {missing[0]!r}; the "
                                  f"thresholds must cover all {len(tag_names)} tags")
        return np.array([lookup.get(t, lookup.get(short_tag(t))) for t in tag_names], dtype=np.float64)
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.shape != (len(tag_names),):
        raise EvaluationError(f"thresholds must have one value per tag ({len(tag_names)}), got shape {arr.shape}")
    if np.isnan(arr).any():
        raise EvaluationError("thresholds contain NaN; expected one number (or inf) per tag")
    return arr


def apply_thresholds(y_score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Binary decisions ``score >= threshold`` per tag, shape (n_tracks, n_tags)."""
    return np.asarray(y_score) >= np.asarray(thresholds)[None, :]


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from counts, 0 where undefined (sklearn's ``zero_division=0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        fscore = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, fscore


def decision_metrics(y_true: np.ndarray, decisions: np.ndarray, *,
                     keep: np.ndarray | None = None) -> dict[str, float]:
    """MediaEval's ``precision-``, ``recall-``, ``F-score-`` ``macro``/``micro``: the values of sklearn's
    multilabel ``precision_recall_fscore_support(..., zero_division=0)``, computed from per-tag counts (so a
    single-tag matrix is not mistaken for a two-class problem); macro over ``keep`` tags, micro over all."""
    y = np.asarray(y_true).astype(bool)
    d = np.asarray(decisions).astype(bool)
    keep = np.ones(y.shape[1], dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    tp = (y & d).sum(axis=0).astype(np.float64)
    fp = (~y & d).sum(axis=0).astype(np.float64)
    fn = (y & ~d).sum(axis=0).astype(np.float64)
    macro = _prf(tp[keep], fp[keep], fn[keep])
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    out: dict[str, float] = {}
    for average, values in (("macro", [float(np.mean(v)) for v in macro]), ("micro", [float(v) for v in micro])):
        out[f"precision-{average}"], out[f"recall-{average}"], out[f"F-score-{average}"] = values
    return out


def save_thresholds(path: str | os.PathLike[str], thresholds: Mapping[str, float]) -> None:
    """Write ``tag<TAB>threshold`` lines (exact float repr, so a reload decides identically)."""
    from focaltag._io import write_text

    lines = [f"{tag}\t{float(value)!r}\n" for tag, value in thresholds.items()]
    write_text(path, "".join(lines))


def load_thresholds(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read a ``tag<TAB>threshold`` TSV (blank lines, ``#`` comments and a ``tag threshold`` header skipped)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"thresholds file not found: {path}; create it with "
                              "'focaltag evaluate --thresholds-from VAL_GT VAL_PRED --save-thresholds FILE'")
    out: dict[str, float] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) != 2:
            raise EvaluationError(f"{path} line {lineno}: expected 'tag<TAB>threshold', got {line[:60]!r}")
        tag, text = cols[0].strip(), cols[1].strip()
        try:
            value = float(text)
        except ValueError:
            if lineno == 1 and text.lower() == "threshold":
                continue
            raise EvaluationError(f"{path} line {lineno}: threshold {text!r} is not a number") from None
        if math.isnan(value):
            raise EvaluationError(f"{path} line {lineno}: threshold of {tag!r} is NaN; expected a number")
        if tag in out:
            raise EvaluationError(f"{path} line {lineno}: tag {tag!r} is listed twice")
        out[tag] = value
    if not out:
        raise EvaluationError(f"{path}: no thresholds found; expected 'tag<TAB>threshold' lines")
    return out
