"""Multiple-comparison control for the p-values of one table: Holm's step-down method, Bonferroni, or none.

Why: ``compare`` with several B files and the report's Table I each print many two-sided p-values (every system
against the baseline, on every metric). Each is right alone; in a table of twenty, one below 0.05 is expected by
chance even when no system differs. Adjusting over the *family* (the rows of one table times the metrics in it)
keeps the chance of any false "significant" in that table at most ``alpha``.

- ``holm`` (default): sort the m p-values, multiply the i-th smallest (1-based) by ``m - i + 1``, take the running
  maximum so the adjusted values keep the raw order (step-down), clip at 1. Controls the family-wise error rate
  under any dependence between the tests, and never rejects less than Bonferroni.
- ``bonferroni``: every p-value times m, clipped at 1.
- ``none``: the raw p-values.

Intervals: the intervals that match Bonferroni are the per-comparison intervals at level ``1 - (1 - level) / m``;
with the normal interval and p-value of :func:`focaltag.evaluation.bootstrap.paired_bootstrap` such an interval
excludes 0 exactly when the Bonferroni-adjusted p-value is below ``1 - level``, and all m of them cover their
differences together with probability at least ``level``. They are valid simultaneous intervals under Holm too,
but Holm can reject where Bonferroni does not, so an interval may include 0 where Holm's adjusted p-value is below
``1 - level`` (intervals that follow Holm exactly carry no information on the rejected comparisons).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from focaltag.errors import ConfigError, EvaluationError

__all__ = [
    "ADJUST_METHODS",
    "DEFAULT_ADJUST",
    "ADJUST_LABELS",
    "check_adjust_method",
    "adjust_p_values",
    "simultaneous_level",
    "describe_intervals",
]

ADJUST_METHODS = ("holm", "bonferroni", "none")
DEFAULT_ADJUST = "holm"
ADJUST_LABELS = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "unadjusted"}
"""How each method is named in table headers and notes."""


def check_adjust_method(method: str, *, flag: str = "--adjust") -> str:
    """``method`` if it is one of :data:`ADJUST_METHODS`, else a ConfigError naming ``flag`` and the choices."""
    if method not in ADJUST_METHODS:
        raise ConfigError(f"{flag} {method!r}: unknown adjustment; choose one of {', '.join(ADJUST_METHODS)}")
    return method


def _check_p_values(p_values: Sequence[float] | np.ndarray, labels: Sequence[str] | None) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise EvaluationError(f"p-values must be a flat list, got an array of shape {p.shape}")
    if labels is not None and len(labels) != p.size:
        raise EvaluationError(f"{len(labels)} labels for {p.size} p-values; give one label per p-value")
    bad = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))  # NaN fails both comparisons
    if bad.size:
        i = int(bad[0])
        what = f"the p-value of {labels[i]}" if labels is not None else f"p-value {i}"
        fix = ("a NaN p-value has no place in a family adjustment: rerun with more bootstrap resamples (an "
               "undefined standard error needs at least 2)" if np.isnan(p[i]) else "p-values lie in [0, 1]")
        raise EvaluationError(f"{what} is {p[i]}; {fix}")
    return p


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str = DEFAULT_ADJUST, *,
                    labels: Sequence[str] | None = None) -> np.ndarray:
    """The p-values of one family adjusted for multiple testing (same order as given).

    Args:
        p_values (sequence of float): the raw p-values of every test in the family, each in [0, 1].
        method (str, optional): ``holm``, ``bonferroni`` or ``none``. (Default: ``holm``)
        labels (sequence of str, optional): one name per test, used to say which p-value is invalid.

    Returns:
        ndarray (m,): adjusted p-values, each >= its raw value and <= 1; empty for an empty family.

    Raises:
        ConfigError: an unknown ``method``.
        EvaluationError: a NaN or out-of-range p-value (refused: its rank in the family is undefined).
    """
    check_adjust_method(method, flag="method")
    p = _check_p_values(p_values, labels)
    m = p.size
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="mergesort")  # stable: tied p-values keep their order (and get equal values)
    factors = np.arange(m, 0, -1, dtype=np.float64)  # m, m-1, ..., 1 for the 1st, 2nd, ..., m-th smallest
    stepped = np.minimum(np.maximum.accumulate(p[order] * factors), 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = stepped
    return adjusted


def simultaneous_level(level: float, family_size: int, method: str = DEFAULT_ADJUST) -> float:
    """Per-comparison confidence level whose intervals hold together at ``level`` over the family.

    ``1 - (1 - level) / m`` for ``holm`` and ``bonferroni`` (Bonferroni's intervals, valid for both); ``level``
    itself for ``none`` (intervals per comparison) or a family of one.
    """
    check_adjust_method(method, flag="method")
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"confidence level must be in (0, 1), got {level}")
    if family_size < 0:
        raise EvaluationError(f"family size must be >= 0, got {family_size}")
    if method == "none" or family_size <= 1:
        return level
    return 1.0 - (1.0 - level) / family_size


def describe_intervals(level: float, family_size: int, method: str = DEFAULT_ADJUST) -> str:
    """A phrase saying what the intervals shown with adjusted p-values cover (to follow "intervals:")."""
    pct = f"{100 * level:g}%"
    if method == "none" or family_size <= 1:
        return f"per comparison ({pct} each), not simultaneous"
    each = 100 * simultaneous_level(level, family_size, method)
    text = f"simultaneous {pct} over the {family_size} comparisons (Bonferroni: each at {each:.4g}%)"
    if method == "holm":
        text += ("; Holm can reject where Bonferroni does not, so an interval can include 0 where Holm's "
                 f"adjusted p is below {1 - level:g}")
    return text
