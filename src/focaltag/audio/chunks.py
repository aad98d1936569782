"""Where chunks start in a track and how short tracks are padded (the same rule in training, eval and tagging)."""

from __future__ import annotations

import numpy as np

from focaltag.errors import DataError

__all__ = ["chunk_starts", "pad_to"]


def chunk_starts(n_samples: int, chunk: int, n_chunks: int) -> list[int]:
    """Start samples of ``n_chunks`` evenly spaced chunks, as the reference evaluation does.

    The reference uses ``hop = (n_samples - chunk) // n_chunks`` and starts ``i * hop`` for
    ``i in range(n_chunks)``; a track no longer than one chunk has ``hop = 0`` (every chunk starts at 0, on
    the zero-padded track, see :func:`pad_to`). Every chunk lies inside ``max(n_samples, chunk)`` samples.

    Args:
        n_samples (int): length of the track in samples.
        chunk (int): chunk length in samples.
        n_chunks (int): number of chunks.

    Returns:
        list[int]: ``n_chunks`` start offsets, non-decreasing.
    """
    if chunk < 1:
        raise DataError(f"chunk must be >= 1 sample, got chunk={chunk}")
    if n_chunks < 1:
        raise DataError(f"n_chunks must be >= 1, got n_chunks={n_chunks}")
    if n_samples < 0:
        raise DataError(f"n_samples must be >= 0, got n_samples={n_samples}")
    hop = max(n_samples - chunk, 0) // n_chunks
    return [i * hop for i in range(n_chunks)]


def pad_to(wave: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad a 1-D waveform at the end to at least ``n`` samples (longer waves are returned unchanged).

    Padding at the end with silence keeps the track's real start aligned with chunk 0, so a short track is
    seen the same way by training, evaluation and tagging.
    """
    if wave.ndim != 1:
        raise DataError(f"pad_to expects a 1-D waveform, got shape {tuple(wave.shape)}")
    if wave.shape[0] >= n:
        return wave
    out = np.zeros(n, dtype=wave.dtype)
    out[: wave.shape[0]] = wave
    return out
