"""Adaptive chunking's pure rule (``focaltag.inference.adaptive``) against independent formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from focaltag.errors import ConfigError
from focaltag.inference.adaptive import AdaptiveRule, half_width, ld_order, parse_chunks, settled


def _bit_reverse(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2)


def test_ld_order_is_the_bit_reversal_for_powers_of_two() -> None:
    for bits in range(5):
        n = 2 ** bits
        assert ld_order(n) == [_bit_reverse(i, bits) for i in range(n)]


@pytest.mark.parametrize("n", range(1, 41))
def test_ld_order_is_a_permutation_and_prefixes_spread(n: int) -> None:
    order = ld_order(n)
    assert sorted(order) == list(range(n))
    # every prefix of length m leaves no gap of more than about 2n/m positions unvisited
    for m in range(2, n + 1):
        seen = sorted(order[:m])
        gaps = np.diff([*seen, seen[0] + n])  # circular gaps
        assert gaps.max() <= 4 * n / m + 1


def test_half_width_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, size=(6, 3))
    n = 16
    s = np.maximum(probs.std(axis=0, ddof=1), 0.02)
    want = 3.0 * (10 / 16) * s * math.sqrt(1 / 6 + 1 / 10)
    np.testing.assert_allclose(half_width(probs, n), want)
    assert np.all(half_width(probs, 6) == 0)  # every chunk read: nothing left to change
    flat = np.full((5, 2), 0.3)
    np.testing.assert_allclose(half_width(flat, 16, min_spread=0.05), 3.0 * (11 / 16) * 0.05 * math.sqrt(1 / 5 + 1 / 11))


def test_settled_decisions() -> None:
    thr = np.array([0.5, 0.5])
    assert settled(np.array([0.8, 0.1]), np.array([0.2, 0.3]), thresholds=thr)
    assert not settled(np.array([0.8, 0.1]), np.array([0.31, 0.3]), thresholds=thr)  # 0.8 - 0.31 < 0.5


def test_settled_top_k_needs_every_rank_fixed() -> None:
    mean = np.array([0.9, 0.7, 0.5, 0.3, 0.1])
    assert settled(mean, np.full(5, 0.09), top_k=2)
    assert not settled(mean, np.full(5, 0.11), top_k=2)  # 0.7 - 0.11 < 0.5 + 0.11: rank 2 could change
    # an order swap inside the top-k counts although the set is the same
    mean = np.array([0.9, 0.88, 0.1, 0.05])
    assert not settled(mean, np.full(4, 0.02), top_k=2)
    assert settled(mean, np.full(4, 0.009), top_k=2)
    assert settled(mean, np.full(4, 1.0), top_k=0)


def test_rule_checkpoints_and_full_read() -> None:
    rule = AdaptiveRule(min_chunks=4, check_every=2)
    assert [k for k in range(1, 17) if rule.is_checkpoint(k, 16)] == [4, 6, 8, 10, 12, 14, 16]
    noisy = np.random.default_rng(1).uniform(0, 1, size=(16, 8))
    assert not rule.stop(noisy[:3], 16)  # before the minimum: never
    assert rule.stop(noisy, 16)  # all read: always


def test_rule_stops_early_on_a_clear_track_and_agrees_with_the_full_mean() -> None:
    rng = np.random.default_rng(2)
    base = np.linspace(0.95, 0.05, 10)  # well separated tags, small spread between chunks
    chunks = np.clip(base + 0.01 * rng.standard_normal((16, 10)), 0, 1)
    rule = AdaptiveRule()
    k = next(k for k in range(1, 17) if rule.stop(chunks[:k], 16))
    assert k == 4
    top = np.argsort(-chunks[:k].mean(axis=0))[:5]
    assert list(top) == list(np.argsort(-chunks.mean(axis=0))[:5])


def test_rule_bound_holds_in_simulation() -> None:
    """Over many simulated tracks, a settled outcome equals the 16-chunk outcome in >= 99 % of them."""
    rng = np.random.default_rng(3)
    rule, agree, stopped = AdaptiveRule(), 0, 0
    for _ in range(400):
        level = rng.uniform(0, 1, size=12)
        chunks = np.clip(level + rng.uniform(0.02, 0.2) * rng.standard_normal((16, 12)), 0, 1)
        k = next(k for k in range(1, 17) if rule.stop(chunks[:k], 16))
        if k < 16:
            stopped += 1
            agree += list(np.argsort(-chunks[:k].mean(0))[:5]) == list(np.argsort(-chunks.mean(0))[:5])
    assert stopped > 0
    assert agree >= 0.99 * stopped


def test_parse_chunks() -> None:
    assert parse_chunks("auto") is None
    assert parse_chunks("8") == 8
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="--chunks"):
            parse_chunks(bad)
    with pytest.raises(ConfigError):
        AdaptiveRule(min_chunks=1)
