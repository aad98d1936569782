"""``evaluate(...)``: the MediaEval metric dictionary, with optional tag groups, per-tag table, decisions and
bootstrap confidence intervals, from one ground-truth / prediction pair."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from focaltag.errors import EvaluationError
from focaltag.evaluation.bootstrap import (
    INTERVAL_METHOD,
    _check_level,
    _macro_rows,
    bootstrap_macro,
    decision_tag_scores,
    normal_interval,
)
from focaltag.evaluation.groups import (
    DEFAULT_GROUP_THRESHOLDS,
    align_counts,
    frequency_groups,
    group_rules,
    parse_group_thresholds,
    resolve_groups,
)
from focaltag.evaluation.metrics import (
    check_matrices,
    default_tag_names,
    micro_scores,
    per_tag_scores,
    undefined_tags,
)
from focaltag.evaluation.thresholds import check_rule, decide, decision_metrics, thresholds_array

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


def _nan_to_none(value: float | None) -> float | None:
    """JSON has no NaN: undefined values are reported as None (null)."""
    return None if value is None or not np.isfinite(value) else float(value)


def _group_entry(members: Sequence[str], index: Mapping[str, int], ap: np.ndarray, auc: np.ndarray,
                 keep: np.ndarray, rule: str | None) -> tuple[dict, np.ndarray]:
    cols = np.array([index[t] for t in members], dtype=np.int64)
    scored = cols[keep[cols]] if cols.size else cols
    entry: dict = {
        "PR-AUC": _nan_to_none(float(np.mean(ap[scored]))) if scored.size else None,
        "ROC-AUC": _nan_to_none(float(np.mean(auc[scored]))) if scored.size else None,
        "n_tags": int(cols.size),
        "tags": list(members),
    }
    if rule:
        entry["rule"] = rule
    return entry, scored


def evaluate(
    ground_truth: object,
    predictions: object,
    *,
    tag_names: Sequence[str] | None = None,
    train_counts: Mapping[str, int] | Sequence[int] | np.ndarray | None = None,
    group_thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS,
    groups: Mapping[str, Sequence[str]] | None = None,
    per_tag: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    thresholds: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    level: float = 0.95,
    decision_rule: str = "gt",
) -> dict:
    """Score a (n_tracks, n_tags) prediction matrix the MediaEval way and return a JSON-ready dict.

    Args:
        ground_truth (array-like (n_tracks, n_tags)): 0/1 labels.
        predictions (array-like (n_tracks, n_tags)): finite scores (e.g. sigmoid outputs).
        tag_names (sequence of str, optional): column names. (Default: the 56 mood/theme tags when there
            are 56 columns, else ``tag_000``...)
        train_counts (mapping or sequence, optional): training tracks per tag; adds head/middle/tail
            ``"groups"`` and the ``train_count`` column of ``"per_tag"``. (Default: ``None``)
        group_thresholds ((int, int)): head is count > first, tail is count <= second. (Default: the paper's, ``focaltag.data.groups.DEFAULT_GROUP_THRESHOLDS``)
        groups (mapping name -> tags, optional): custom groups, reported alongside (or instead of) the
            frequency groups. (Default: ``None``)
        per_tag (bool): add ``"per_tag"``: PR-AUC, ROC-AUC, positives, train_count per tag. (Default: False)
        bootstrap (int): resamples for the intervals of every macro metric (0 = off): point estimate
            +- z * bootstrap standard error (``ci.method``; see ``focaltag.evaluation.bootstrap``). (Default: 0)
        seed (int): bootstrap seed. (Default: 0)
        thresholds (mapping or sequence, optional): per-tag decision thresholds; adds ``precision-``,
            ``recall-``, ``F-score-`` ``macro``/``micro`` and ``"decision_rule"``. (Default: ``None``)
        level (float): confidence level of the intervals. (Default: 0.95)
        decision_rule (str): ``"gt"`` decides ``score > t`` (the official MediaEval rule), ``"ge"``
            ``score >= t``. (Default: ``"gt"``)

    Returns:
        dict with ``"ROC-AUC-macro"``, ``"PR-AUC-macro"``, ``"ROC-AUC-micro"``, ``"PR-AUC-micro"`` and, when
        asked for, ``"precision-macro"``..., ``"groups"``, ``"per_tag"``, ``"ci"``; ``"excluded_tags"``
        lists tags left out of the macro averages because the split has no positive (or negative) for them.
    """
    if isinstance(bootstrap, bool) or int(bootstrap) < 0:
        raise EvaluationError(f"bootstrap must be a number of resamples >= 0, got {bootstrap!r}")
    _check_level(level)
    check_rule(decision_rule)
    y, s = check_matrices(ground_truth, predictions, tag_names=tag_names)
    names = list(tag_names) if tag_names is not None else default_tag_names(y.shape[1])
    excluded = undefined_tags(y, tag_names=names)
    keep = ~excluded
    if not keep.any():
        raise EvaluationError("no tag has both positive and negative tracks in the evaluated split; "
                              "macro PR-AUC/ROC-AUC are undefined")
    ap, auc = per_tag_scores(y, s)
    decisions = (None if thresholds is None
                 else decide(s, thresholds_array(thresholds, names), decision_rule))
    result = _headline(y, s, ap, auc, keep, decisions, decision_rule)
    if excluded.any():
        result["excluded_tags"] = [names[j] for j in np.flatnonzero(excluded)]
    counts = align_counts(train_counts, names) if train_counts is not None else None
    group_map = _group_map(names, counts, group_thresholds, groups)
    index = {t: j for j, t in enumerate(names)}
    group_cols: dict[str, np.ndarray] = {}
    if group_map:
        result["groups"] = {}
        for gname, (members, rule) in group_map.items():
            result["groups"][gname], group_cols[gname] = _group_entry(members, index, ap, auc, keep, rule)
    if per_tag:
        result["per_tag"] = _per_tag_table(y, names, ap, auc, counts)
    if bootstrap:
        result["ci"], group_ci = _bootstrap_ci(y, s, keep, int(bootstrap), seed, level, decisions, group_cols,
                                               result)
        for gname, gci in group_ci.items():
            result["groups"][gname]["ci"] = gci
    return result


def _headline(y: np.ndarray, s: np.ndarray, ap: np.ndarray, auc: np.ndarray, keep: np.ndarray,
              decisions: np.ndarray | None, decision_rule: str) -> dict:
    """The macro and micro metrics (and the decision metrics given decisions), in the report's key order."""
    pr_micro, roc_micro = micro_scores(y, s)
    result: dict = {"ROC-AUC-macro": float(np.mean(auc[keep])), "PR-AUC-macro": float(np.mean(ap[keep]))}
    dm = decision_metrics(y, decisions, keep=keep) if decisions is not None else {}
    result.update({k: v for k, v in dm.items() if k.endswith("macro")})
    result["ROC-AUC-micro"] = roc_micro
    result["PR-AUC-micro"] = pr_micro
    result.update({k: v for k, v in dm.items() if k.endswith("micro")})
    if decisions is not None:
        result["decision_rule"] = decision_rule
    return result


def _group_map(names: Sequence[str], counts: np.ndarray | None, group_thresholds: Sequence[int],
               groups: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[list[str], str | None]]:
    """Group name -> (member tags, the frequency rule or None): head/middle/tail from train counts, then the
    custom groups."""
    group_map: dict[str, tuple[list[str], str | None]] = {}
    if counts is not None:
        head, tail = parse_group_thresholds(group_thresholds)
        rules = group_rules((head, tail))
        for gname, members in frequency_groups(counts, names, thresholds=(head, tail)).items():
            group_map[gname] = (members, rules[gname])
    if groups is not None:
        for gname, members in resolve_groups(groups, names).items():
            group_map[gname] = (members, None)
    return group_map


def _per_tag_table(y: np.ndarray, names: Sequence[str], ap: np.ndarray, auc: np.ndarray,
                   counts: np.ndarray | None) -> dict:
    positives = y.sum(axis=0)
    return {
        t: {"PR-AUC": _nan_to_none(ap[j]), "ROC-AUC": _nan_to_none(auc[j]), "positives": int(positives[j]),
            "train_count": int(counts[j]) if counts is not None else None}
        for j, t in enumerate(names)
    }


def _point(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _bootstrap_ci(y: np.ndarray, s: np.ndarray, keep: np.ndarray, n_resamples: int, seed: int, level: float,
                  decisions: np.ndarray | None, group_cols: Mapping[str, np.ndarray], result: Mapping
                  ) -> tuple[dict, dict[str, dict]]:
    """Normal intervals (point +- z * bootstrap SE) of every macro metric (the report's ``"ci"``) and of each
    group's mean (by group name), the replicates coming from one shared set of resamples; each contains its
    point estimate by construction."""
    reps, weights = bootstrap_macro(y, s, n_resamples=n_resamples, seed=seed, keep=keep)
    intervals = {m: normal_interval(result[m], reps[m], level) for m in ("ROC-AUC-macro", "PR-AUC-macro")}
    if decisions is not None:
        for metric, per_tag in decision_tag_scores(y, decisions, weights).items():
            name = f"{metric}-macro"
            intervals[name] = normal_interval(result[name], _macro_rows(per_tag, keep), level)
    group_ci: dict[str, dict[str, Sequence[float | None]]] = {}
    for gname, cols in group_cols.items():
        if cols.size == 0:
            group_ci[gname] = {"PR-AUC": [None, None], "ROC-AUC": [None, None]}
            continue
        mask = np.zeros(y.shape[1], dtype=bool)
        mask[cols] = True
        entry = result["groups"][gname]
        group_ci[gname] = {
            m: normal_interval(_point(entry[m]), _macro_rows(reps[f"_per_tag_{m}"], mask), level)
            for m in ("PR-AUC", "ROC-AUC")
        }
    json_intervals = {m: [_nan_to_none(v) for v in iv] for m, iv in intervals.items()}
    json_group_ci = {g: {m: [_nan_to_none(v) for v in iv] for m, iv in gci.items()} for g, gci in group_ci.items()}
    ci = {"level": level, "resamples": n_resamples, "seed": seed, "method": INTERVAL_METHOD,
          "intervals": json_intervals}
    return ci, json_group_ci
