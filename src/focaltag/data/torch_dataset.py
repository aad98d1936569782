"""PyTorch datasets over the waveform cache: random training chunks and evenly spaced evaluation chunks.

Short tracks (fewer samples than one chunk) are zero-padded at the end (``focaltag.audio.chunks.pad_to``),
the same rule the tagger uses, so nothing crashes on a 2-second track.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from focaltag.audio.cache import WaveformCache
from focaltag.audio.chunks import eval_chunks
from focaltag.data.metadata import TagVocabulary, TrackRecord
from focaltag.errors import DataError

__all__ = ["TrainChunkDataset", "EvalChunkDataset"]


def _open_cache(cache: WaveformCache | str | os.PathLike[str]) -> WaveformCache:
    return cache if isinstance(cache, WaveformCache) else WaveformCache(cache)


def _check_tracks(cache: WaveformCache, tracks: Sequence[TrackRecord]) -> None:
    if not tracks:
        raise DataError("the dataset needs at least one track, got an empty track list")
    missing = [r.track_id for r in tracks if r.track_id not in cache]
    if missing:
        raise DataError(f"{len(missing)} of {len(tracks)} tracks are not in the cache {cache.path} (first: "
                        f"{', '.join(missing[:3])}); run 'focaltag data prepare' with their TSV, or drop the "
                        "tracks listed in its failures.tsv")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {name}={value!r}")


class _CachedTracks(Dataset):
    """What both readers share: the opened cache, the checked track list and the multi-hot targets."""

    def __init__(self, cache: WaveformCache | str | os.PathLike[str], tracks: Sequence[TrackRecord],
                 vocab: TagVocabulary, chunk_samples: int, unknown_tags: Literal["error", "ignore"]) -> None:
        _check_positive("chunk_samples", chunk_samples)
        self.cache = _open_cache(cache)
        self.tracks = list(tracks)
        _check_tracks(self.cache, self.tracks)
        self.vocab = vocab
        self.chunk_samples = int(chunk_samples)
        self.targets = vocab.encode(self.tracks, unknown=unknown_tags, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.tracks)


class TrainChunkDataset(_CachedTracks):
    """Item ``i``: a random ``chunk_samples`` window of track ``i`` and its multi-hot target.

    The window start is drawn uniformly from ``[0, length - chunk_samples)`` as in the reference
    (``floor(U * (length - chunk))``), from an RNG seeded by ``(seed, epoch, i)``: the same item in the same
    epoch is the same chunk whatever the worker count or order, so a resumed run sees exactly the chunks an
    uninterrupted one would. Call :meth:`set_epoch` before iterating each epoch (the epoch lives in shared
    memory, so DataLoader workers, also persistent ones, see it).

    Args:
        cache (WaveformCache or path): the prepared cache.
        tracks (Sequence[TrackRecord]): the tracks, in item order.
        vocab (TagVocabulary): target columns.
        chunk_samples (int, optional): window length in samples. (Default: ``73600``)
        seed (int, optional): base seed. (Default: ``0``)
        unknown_tags (str, optional): ``"error"`` or ``"ignore"`` tags outside ``vocab``. (Default: ``"error"``)

    Returns (per item):
        tuple[Tensor, Tensor]: chunk float32 ``(chunk_samples,)``, target float32 ``(n_tags,)``.
    """

    def __init__(self, cache: WaveformCache | str | os.PathLike[str], tracks: Sequence[TrackRecord],
                 vocab: TagVocabulary, chunk_samples: int = 73600, seed: int = 0, *,
                 unknown_tags: Literal["error", "ignore"] = "error") -> None:
        super().__init__(cache, tracks, vocab, chunk_samples, unknown_tags)
        self.seed = int(seed)
        self.lengths = np.array([self.cache.length(r.track_id) for r in self.tracks], dtype=np.int64)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose chunks are drawn (call before creating the epoch's DataLoader iterator)."""
        self._epoch.fill_(int(epoch))

    def chunk_start(self, index: int, epoch: int | None = None) -> int:
        """Start sample of item ``index`` in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        room = int(self.lengths[index]) - self.chunk_samples
        if room <= 0:
            return 0
        rng = np.random.default_rng([self.seed, epoch, index])
        return int(rng.integers(0, room))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.chunk_start(index)
        wave = self.cache.read(self.tracks[index].track_id, start, self.chunk_samples)
        return torch.from_numpy(wave), torch.from_numpy(self.targets[index])


class EvalChunkDataset(_CachedTracks):
    """Item ``i``: the ``n_chunks`` evenly spaced windows of track ``i`` and its multi-hot target.

    Starts are ``chunk_starts(length, chunk_samples, n_chunks)`` (hop ``(length - chunk) // n_chunks``, the
    reference's rule; 16 for validation, 32 for test in the paper); a short track is zero-padded at the end,
    so all its chunks are the same padded window.

    Args:
        cache (WaveformCache or path): the prepared cache.
        tracks (Sequence[TrackRecord]): the tracks, in item order.
        vocab (TagVocabulary): target columns.
        chunk_samples (int, optional): window length in samples. (Default: ``73600``)
        n_chunks (int, optional): windows per track. (Default: ``16``)
        unknown_tags (str, optional): ``"error"`` or ``"ignore"`` tags outside ``vocab``. (Default: ``"error"``)

    Returns (per item):
        tuple[Tensor, Tensor]: chunks float32 ``(n_chunks, chunk_samples)``, target float32 ``(n_tags,)``.
    """

    def __init__(self, cache: WaveformCache | str | os.PathLike[str], tracks: Sequence[TrackRecord],
                 vocab: TagVocabulary, chunk_samples: int = 73600, n_chunks: int = 16, *,
                 unknown_tags: Literal["error", "ignore"] = "error") -> None:
        _check_positive("n_chunks", n_chunks)
        super().__init__(cache, tracks, vocab, chunk_samples, unknown_tags)
        self.n_chunks = int(n_chunks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = eval_chunks(self.cache, self.tracks[index].track_id, self.chunk_samples, self.n_chunks)
        return torch.from_numpy(chunks), torch.from_numpy(self.targets[index])
