"""Multiple-comparison adjustment against statsmodels' ``multipletests`` (an independent implementation, used in
the tests only), on random p-values and the edge cases: ties, p = 1, a single test, an empty family, NaN."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from focaltag.errors import ConfigError, EvaluationError
from focaltag.evaluation.bootstrap import se_interval
from focaltag.evaluation.multiple import (
    adjust_p_values,
    check_adjust_method,
    describe_intervals,
    simultaneous_level,
)

STATSMODELS = {"holm": "holm", "bonferroni": "bonferroni"}


def _reference(p: np.ndarray, method: str) -> np.ndarray:
    if method == "none":
        return p
    return multipletests(p, method=STATSMODELS[method])[1]


@pytest.mark.parametrize("method", ["holm", "bonferroni", "none"])
@pytest.mark.parametrize("seed", range(6))
def test_random_p_values_match_statsmodels(method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 40))
    # a mix of small and large p-values, as a table with a few real differences gives
    p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m))
    adjusted = adjust_p_values(p, method)
    np.testing.assert_allclose(adjusted, _reference(p, method), rtol=1e-12, atol=0)
    assert (adjusted >= p).all() and (adjusted <= 1.0).all()
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()  # step-down keeps the raw order


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
@pytest.mark.parametrize("p", [
    [0.01, 0.01, 0.01, 0.2],           # ties at the bottom
    [0.04, 0.02, 0.04, 0.04, 0.5],     # ties in the middle, given out of order
    [1.0, 1.0, 0.3],                   # p = 1
    [0.0, 0.03, 1.0],                  # p = 0 and p = 1
    [0.7],                             # a single test
    [0.2, 0.2, 0.2, 0.2],              # all tied
])
def test_edge_cases_match_statsmodels(method: str, p: list[float]) -> None:
    adjusted = adjust_p_values(p, method)
    np.testing.assert_allclose(adjusted, _reference(np.array(p), method), rtol=1e-12, atol=0)
    arr = np.array(p)
    for v in np.unique(arr):  # tied raw values get one adjusted value
        assert len(set(adjusted[arr == v].tolist())) == 1


def test_single_test_and_empty_family_are_unchanged() -> None:
    for method in ("holm", "bonferroni", "none"):
        np.testing.assert_array_equal(adjust_p_values([0.03], method), [0.03])
        out = adjust_p_values([], method)
        assert out.shape == (0,)
        assert multipletests(np.array([]), method="holm")[1].shape == out.shape


def test_nan_and_out_of_range_p_values_are_refused() -> None:
    with pytest.raises(EvaluationError, match=r"the p-value of B2 PR-AUC-macro is nan.*at least 2"):
        adjust_p_values([0.1, float("nan")], "holm", labels=["B1 PR-AUC-macro", "B2 PR-AUC-macro"])
    with pytest.raises(EvaluationError, match=r"p-value 0 is nan"):
        adjust_p_values([float("nan")], "none")
    with pytest.raises(EvaluationError, match=r"p-value 1 is 1\.5; p-values lie in \[0, 1\]"):
        adjust_p_values([0.2, 1.5], "bonferroni")
    with pytest.raises(EvaluationError, match="1 labels for 2 p-values"):
        adjust_p_values([0.2, 0.3], labels=["x"])
    with pytest.raises(EvaluationError, match="flat list"):
        adjust_p_values([[0.2, 0.3]])


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--adjust 'sidak': unknown adjustment; choose one of holm, bonferroni, "
                       "none"):
        check_adjust_method("sidak")
    with pytest.raises(ConfigError, match="method 'BH'"):
        adjust_p_values([0.1], "BH")


def test_bonferroni_intervals_exclude_zero_exactly_when_the_adjusted_p_is_below_alpha() -> None:
    """The interval at ``simultaneous_level`` and the Bonferroni-adjusted p-value of the same normal test agree
    (p-values computed here from the normal tail, as the paired bootstrap does)."""
    rng = np.random.default_rng(3)
    m = 8
    diffs = rng.normal(0.0, 0.02, m)
    ses = rng.uniform(0.004, 0.01, m)
    raw = np.array([2 * (1 - NormalDist().cdf(abs(d) / s)) for d, s in zip(diffs, ses, strict=True)])
    adjusted = adjust_p_values(raw, "bonferroni")
    level = simultaneous_level(0.95, m, "bonferroni")
    assert level == pytest.approx(1 - 0.05 / m)
    for d, s, p in zip(diffs, ses, adjusted, strict=True):
        lo, hi = se_interval(float(d), float(s), level, bounds=(-1.0, 1.0))
        assert (lo > 0 or hi < 0) == (p < 0.05)
    # Holm's adjusted p-values are never above Bonferroni's: an interval excluding 0 means Holm rejects too
    assert (adjust_p_values(raw, "holm") <= adjusted + 1e-15).all()


def test_simultaneous_level_and_its_description() -> None:
    assert simultaneous_level(0.95, 10, "holm") == pytest.approx(0.995)
    assert simultaneous_level(0.95, 10, "none") == 0.95
    assert simultaneous_level(0.95, 1, "holm") == 0.95
    with pytest.raises(EvaluationError, match="confidence level"):
        simultaneous_level(1.0, 3)
    assert "per comparison" in describe_intervals(0.95, 4, "none")
    text = describe_intervals(0.95, 4, "holm")
    assert "simultaneous 95% over the 4 comparisons" in text and "98.75%" in text and "Holm" in text
