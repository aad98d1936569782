"""Which chunks of a track the tagger needs: evenly spaced (as evaluation) or a sliding window.

This module only plans; reading the planned chunks (seeking, streaming, resampling) is
:func:`focaltag.audio.chunks.read_file_chunks`'s job, so a tagged file goes down to ``audio/`` once for its
header (:func:`plan_file`) and once for its samples (:func:`iter_chunks`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focaltag.audio.chunks import (
    FileFacts,
    ReadMethod,
    chunk_starts,
    cut_chunks,
    probe_file,
    read_file_chunks,
)
from focaltag.errors import ConfigError

__all__ = ["ChunkPlan", "plan_starts", "plan_file", "iter_chunks", "chunks_from_waveform", "ReadMethod"]

logger = logging.getLogger(__name__)

chunks_from_waveform = cut_chunks  # the name this module exported before reading moved to audio/


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks to cut from one track, in samples at the model's rate."""

    source: str
    sample_rate: int
    n_samples: int
    chunk_samples: int
    starts: tuple[int, ...]
    native_rate: int = 0  # the file's own rate (0: unknown / in-memory)
    seekable: bool = False

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def n_chunks(self) -> int:
        return len(self.starts)

    @property
    def times(self) -> np.ndarray:
        """Start time of each chunk in seconds."""
        return np.asarray(self.starts, dtype=np.float64) / self.sample_rate


def plan_starts(n_samples: int, chunk_samples: int, *, n_chunks: int = 16,
                hop_samples: int | None = None) -> list[int]:
    """Chunk start offsets covering a track: N evenly spaced (as in training) or a sliding window.

    A track shorter than one chunk gets a single chunk at 0 (padded with zeros at the end when read).
    The sliding window adds a last chunk flush with the end so the tail is covered too.
    """
    if chunk_samples < 1:
        raise ConfigError(f"chunk_samples must be >= 1, got {chunk_samples}")
    if n_samples <= chunk_samples:
        return [0]
    if hop_samples is not None:
        if hop_samples < 1:
            raise ConfigError(f"hop must be positive, got {hop_samples} samples")
        last = n_samples - chunk_samples
        starts = list(range(0, last + 1, hop_samples))
        if starts[-1] != last:
            starts.append(last)
        return starts
    if n_chunks < 1:
        raise ConfigError(f"n_chunks must be >= 1, got {n_chunks}")
    # identical starts (hop 0 for a track of exactly one chunk) give identical chunks: compute each once
    return list(dict.fromkeys(int(s) for s in chunk_starts(n_samples, chunk_samples, n_chunks)))


def plan_file(path: str | os.PathLike[str], *, sample_rate: int, chunk_samples: int, n_chunks: int = 16,
              hop_samples: int | None = None) -> ChunkPlan:
    """Plan a file's chunks from its header (duration) alone."""
    facts = probe_file(path, sample_rate)
    starts = plan_starts(facts.n_samples, chunk_samples, n_chunks=n_chunks, hop_samples=hop_samples)
    return ChunkPlan(str(Path(path)), sample_rate, facts.n_samples, chunk_samples, tuple(starts),
                     facts.native_rate, facts.seekable)


def iter_chunks(plan: ChunkPlan, *, method: ReadMethod = "auto") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, chunk float32[chunk_samples])`` for every start of ``plan``, reading only what is needed."""
    facts = FileFacts(plan.n_samples, plan.native_rate, plan.seekable)  # native rate 0 (unknown): stream
    return read_file_chunks(plan.source, plan.starts, plan.chunk_samples, sample_rate=plan.sample_rate,
                            method=method, facts=facts)
