"""Adaptive chunking: read a track's chunks in a low-discrepancy order and stop once more cannot change the outcome.

The paper's protocol averages 16 evenly spaced chunks. Most tracks' top tags and decisions are settled long before
that, so ``--chunks auto`` (``tag``, ``serve``, library runs; ``predict`` keeps the fixed protocol) visits the same
16 positions in bit-reversed (van der Corput) order, so any prefix spreads over the whole track, and stops at a
checkpoint once the outcome is settled:

* **the outcome**: the decisions (``probability > threshold``) when there are thresholds, else the ordered top-k;
* **the bound**: after ``k`` of ``N`` chunks the ``N``-chunk mean of tag ``j`` differs from the ``k``-chunk mean
  ``m_j`` by ``(N-k)/N * (rest_j - m_j)``, where ``rest_j`` is the mean of the ``N-k`` unread chunks. Treating the
  chunks as draws with the spread ``s_j`` observed so far (sample standard deviation, at least
  :data:`MIN_SPREAD`), that difference has standard deviation ``(N-k)/N * s_j * sqrt(1/k + 1/(N-k))``; the
  half-width ``h_j`` is :data:`Z_BOUND` of those. The outcome is settled when no decision's threshold lies within
  ``m_j +- h_j`` and, for the top-k, consecutive ranks' intervals (and the k-th against every lower tag) do not
  overlap;
* **checkpoints**: after :data:`MIN_CHUNKS` chunks, then every :data:`CHECK_EVERY`; at ``N`` (the maximum, 16 by
  default) the result is the paper's exactly, because the positions are the same.

The decision uses only the first ``k`` chunks in this order, so a result does not depend on batching or timing.
How often it matches 16 chunks and how many chunks it reads is measured by ``bench/tag.py`` (README speed table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from focaltag.errors import ConfigError

__all__ = ["AdaptiveRule", "MIN_CHUNKS", "CHECK_EVERY", "Z_BOUND", "MIN_SPREAD", "ld_order", "half_width",
           "settled", "parse_chunks"]

MIN_CHUNKS = 4
"""Fewest chunks an adaptive result averages (fewer leave the spread itself too uncertain)."""

CHECK_EVERY = 2
"""Chunks between two stopping checks after :data:`MIN_CHUNKS`."""

Z_BOUND = 3.0
"""Standard deviations in the half-width: a normal variable is outside +-3 sd 0.27 % of the time."""

MIN_SPREAD = 0.02
"""Floor on a tag's observed chunk spread, so four chunks that happen to agree do not claim certainty."""


def ld_order(n: int) -> list[int]:
    """A permutation of ``range(n)`` in van der Corput (base 2) order: every prefix spreads over all of ``0..n-1``.

    For ``n`` a power of two it is the bit reversal (16: 0, 8, 4, 12, 2, 10, ...); otherwise the van der Corput
    points scaled to ``n`` with repeats skipped.
    """
    if n < 1:
        return []
    order: list[int] = []
    seen: set[int] = set()
    i = 0
    while len(order) < n:
        x, f, k = 0.0, 0.5, i
        while k:
            x += f * (k & 1)
            k >>= 1
            f /= 2
        pos = min(int(x * n), n - 1)
        if pos not in seen:
            seen.add(pos)
            order.append(pos)
        i += 1
    return order


def half_width(chunk_probs: np.ndarray, n_total: int, *, z: float = Z_BOUND,
               min_spread: float = MIN_SPREAD) -> np.ndarray:
    """Per tag, the bound on how far the ``n_total``-chunk mean can lie from the mean of the ``k`` rows given."""
    probs = np.asarray(chunk_probs, dtype=np.float64)
    k = len(probs)
    if k >= n_total:
        return np.zeros(probs.shape[1])
    rest = n_total - k
    spread = probs.std(axis=0, ddof=1) if k > 1 else np.full(probs.shape[1], 0.5)
    spread = np.maximum(spread, min_spread)
    return z * (rest / n_total) * spread * math.sqrt(1.0 / k + 1.0 / rest)


def settled(mean: np.ndarray, width: np.ndarray, *, top_k: int = 5, thresholds: np.ndarray | None = None) -> bool:
    """Whether every value inside ``mean +- width`` gives the same outcome (decisions, else the ordered top-k)."""
    mean, width = np.asarray(mean, dtype=np.float64), np.asarray(width, dtype=np.float64)
    if thresholds is not None:
        return bool(np.all(np.abs(mean - thresholds) > width))
    k = min(top_k, len(mean))
    if k == 0:
        return True
    order = np.argsort(-mean, kind="stable")
    lo, hi = mean - width, mean + width
    top = order[:k]
    if np.any(lo[top[:-1]] <= hi[top[1:]]):  # two consecutive ranks could swap
        return False
    rest = order[k:]
    return rest.size == 0 or bool(lo[top[-1]] > hi[rest].max())


@dataclass(frozen=True)
class AdaptiveRule:
    """When to stop reading a track's chunks (see the module docstring); ``max_chunks`` is the fixed protocol's."""

    min_chunks: int = MIN_CHUNKS
    check_every: int = CHECK_EVERY
    z: float = Z_BOUND
    min_spread: float = MIN_SPREAD

    def __post_init__(self) -> None:
        if self.min_chunks < 2:
            raise ConfigError(f"adaptive chunking needs min_chunks >= 2 (a spread), got {self.min_chunks}")
        if self.check_every < 1:
            raise ConfigError(f"check_every must be >= 1, got {self.check_every}")
        if not self.z > 0 or not self.min_spread >= 0:
            raise ConfigError(f"z must be > 0 and min_spread >= 0, got {self.z} and {self.min_spread}")

    def is_checkpoint(self, k: int, n_total: int) -> bool:
        """Whether the rule is evaluated after ``k`` of ``n_total`` chunks (always at ``n_total``)."""
        return k >= n_total or (k >= self.min_chunks and (k - self.min_chunks) % self.check_every == 0)

    def stop(self, chunk_probs: np.ndarray, n_total: int, *, top_k: int = 5,
             thresholds: np.ndarray | None = None) -> bool:
        """Whether the first ``len(chunk_probs)`` chunks (in :func:`ld_order`) settle the outcome."""
        k = len(chunk_probs)
        if k >= n_total:
            return True
        if not self.is_checkpoint(k, n_total):
            return False
        width = half_width(chunk_probs, n_total, z=self.z, min_spread=self.min_spread)
        return settled(np.asarray(chunk_probs).mean(axis=0), width, top_k=top_k, thresholds=thresholds)


def parse_chunks(value: str | int) -> int | None:
    """``--chunks`` value: ``"auto"`` -> ``None`` (adaptive, at most 16), else a positive chunk count."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--chunks must be 'auto' or a positive integer, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"--chunks must be 'auto' or a positive integer, got {value!r}")
    return n


def prefix_order(starts: Sequence[int]) -> list[int]:
    """Indices of ``starts`` (evenly spaced positions, in time order) in the order an adaptive run reads them."""
    return ld_order(len(starts))
