"""Per-tag decision thresholds and decisions, the MediaEval way; then precision / recall / F-score.

The official ``calculate_decisions.py`` (MTG/mtg-jamendo-dataset, ``scripts/mediaeval/``) takes, per tag, the
threshold of scikit-learn's ``precision_recall_curve`` at the maximum F-score (NaN F-scores counted as 0) and
decides ``prediction > threshold`` (strict). The chosen threshold *is* one of the validation scores, so the
strict rule leaves out at least the track that defined it: ``>`` and ``>=`` differ on every tag, not only
for rare ties. focaltag follows the official rule by default (``rule="gt"``) so its F-scores are comparable
with published MediaEval numbers; ``rule="ge"`` (``score >= threshold``, the rule under which the curve's
point was counted) stays available explicitly.

Threshold files use the official format, one ``TAG<TAB>VALUE`` line per tag, as written by
``calculate_decisions.py``.
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
    "DECISION_RULES",
    "mediaeval_thresholds",
    "decide",
    "check_rule",
    "best_f_thresholds",
    "apply_thresholds",
    "decision_metrics",
    "save_thresholds",
    "load_thresholds",
    "thresholds_array",
]

logger = logging.getLogger(__name__)


DECISION_RULES = ("gt", "ge")
"""``gt``: ``score > threshold`` (the official MediaEval rule, the default); ``ge``: ``score >= threshold``."""


def check_rule(rule: str) -> str:
    """Validate a decision rule name (one error line naming the choices)."""
    if rule not in DECISION_RULES:
        raise EvaluationError(f"decision rule must be 'gt' (score > threshold, the official MediaEval rule) "
                              f"or 'ge' (score >= threshold), got {rule!r}")
    return rule


def mediaeval_thresholds(ground_truth: object, predictions: object, *,
                         tag_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-tag thresholds as the official ``calculate_decisions.py`` picks them: the threshold of sklearn's
    ``precision_recall_curve`` at the maximum F-score, NaN F-scores counted as 0 (first maximum on ties).

    A tag without a positive track gets ``inf`` (never on) with a warning naming it: its curve has no
    meaningful maximum, and turning such a tag on for every track would only add false positives.
    """
    from sklearn.metrics import precision_recall_curve

    from focaltag.evaluation.metrics import check_matrices

    y, s = check_matrices(ground_truth, predictions, tag_names=tag_names)
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
        # the curve's last point (recall 0, F 0) has no threshold; it can only win when every F is 0,
        # and then argmax is 0 anyway, so limiting to f[:-1] picks what the official script picks
        out[j] = float(thr[int(np.argmax(f[:-1]))])
    return out


def best_f_thresholds(y_true: object, y_score: object, *,
                      tag_names: Sequence[str] | None = None) -> np.ndarray:
    """Former name of :func:`mediaeval_thresholds` (same values)."""
    return mediaeval_thresholds(y_true, y_score, tag_names=tag_names)


def decide(predictions: object, thresholds: object, rule: str = "gt") -> np.ndarray:
    """Yes/no decisions per tag: ``predictions > thresholds`` (``rule="gt"``, official) or ``>=`` (``"ge"``).

    ``predictions`` is (n_tracks, n_tags) or (n_tags,); ``thresholds`` is (n_tags,) in the same column order.
    Everyone in focaltag who turns probabilities into yes/no goes through here, so one rule holds everywhere.
    """
    check_rule(rule)
    p = np.asarray(predictions)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or p.shape[-1:] != t.shape:
        raise EvaluationError(f"decide: need one threshold per tag column; predictions have shape {p.shape}, "
                              f"thresholds {t.shape}")
    return np.greater(p, t) if rule == "gt" else np.greater_equal(p, t)


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


def apply_thresholds(y_score: np.ndarray, thresholds: np.ndarray, rule: str = "gt") -> np.ndarray:
    """Binary decisions per tag, shape (n_tracks, n_tags): :func:`decide` (official strict ``>`` by default)."""
    return decide(y_score, thresholds, rule)


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
    """Write the official ``TAG<TAB>VALUE`` lines (exact float repr, so a reload decides identically)."""
    from focaltag._io import write_text

    lines = [f"{tag}\t{float(value)!r}\n" for tag, value in thresholds.items()]
    write_text(path, "".join(lines))


def load_thresholds(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read the official ``TAG<TAB>VALUE`` file (blank lines, ``#`` comments and a ``tag threshold`` header
    skipped); tags may be full (``mood/theme---happy``) or short names."""
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
