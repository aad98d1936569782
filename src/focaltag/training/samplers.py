"""Training samplers: seeded shuffling and the reference's class-aware sampling, both DDP-aware and resumable.

Each epoch's global order is a pure function of ``(seed, epoch)``, so every DDP rank computes the same order
and takes a disjoint share of it (positions ``rank, rank + R, ...``), and a run resumed mid-epoch continues
with exactly the samples it had not yet seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from focaltag.errors import ConfigError, DataError

__all__ = ["ShuffleSampler", "ClassAwareSampler", "class_aware_epoch_length"]

log = logging.getLogger(__name__)

_SHUFFLE_STREAM = 0x5F1E
_CLASS_AWARE_STREAM = 0xCA5A


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """(world size, rank): given values, else the initialised process group's, else (1, 0)."""
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if active else 1
        if rank is None:
            rank = dist.get_rank() if active else 0
    if num_replicas < 1:
        raise ConfigError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ConfigError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
    return num_replicas, rank


class _EpochSampler(Sampler[int]):
    """Shared mechanics: per-epoch global order -> this rank's share -> skip what a resumed run already saw."""

    _stream = 0

    def __init__(self, global_length: int, *, seed: int, num_replicas: int | None, rank: int | None,
                 drop_last: bool) -> None:
        self.seed = int(seed)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.drop_last = drop_last
        self.global_length = int(global_length)
        if drop_last:
            self.num_samples = self.global_length // self.num_replicas
        else:
            self.num_samples = math.ceil(self.global_length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self._skip = 0

    def _global_order(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self._stream, self.seed, epoch])

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The global order of ``epoch`` padded (repeating its start) or cut to a multiple of the world size."""
        order = self._global_order(self.epoch if epoch is None else epoch)
        if self.total_size > len(order):
            order = np.resize(order, self.total_size)  # repeats from the start, as DistributedSampler pads
        return order[: self.total_size]

    def rank_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's share of ``epoch``: positions ``rank::num_replicas`` of :meth:`epoch_indices`."""
        return self.epoch_indices(epoch)[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self.rank_indices()[self._skip:]
        self._skip = 0  # a resumed epoch skips once; the next pass is whole again
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples - self._skip

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``iter()`` yields (call before every epoch, as DDP needs)."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def state_dict(self, *, consumed: int = 0) -> dict[str, Any]:
        """Position to resume from: the epoch and how many of this rank's samples were already used."""
        return {"kind": type(self).__name__, "seed": self.seed, "epoch": self.epoch, "consumed": int(consumed),
                "num_replicas": self.num_replicas, "global_length": self.global_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next ``iter()`` starts after the consumed samples."""
        if state.get("kind") != type(self).__name__:
            raise DataError(f"sampler state is for {state.get('kind')!r}, not {type(self).__name__}; resume "
                            "with the sampling setting the run was started with")
        if state.get("global_length") != self.global_length or state.get("num_replicas") != self.num_replicas:
            raise DataError(
                f"sampler state was saved for {state.get('global_length')} samples over "
                f"{state.get('num_replicas')} process(es), this run has {self.global_length} over "
                f"{self.num_replicas}; resume with the same training data and number of processes")
        consumed = int(state.get("consumed", 0))
        if not 0 <= consumed <= self.num_samples:
            raise DataError(f"sampler state consumed={consumed} is outside 0..{self.num_samples}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._skip = consumed


class ShuffleSampler(_EpochSampler):
    """Standard training order: a fresh seeded permutation of all tracks every epoch, shared over DDP ranks.

    Args:
        n (int): Number of training items.
        seed (int, optional): Base seed; epoch ``e`` uses ``(seed, e)``. (Default: ``0``)
        num_replicas (int, optional): DDP world size. (Default: the process group's, else 1)
        rank (int, optional): This process's rank. (Default: the process group's, else 0)
        drop_last (bool, optional): Cut the order to a multiple of the world size instead of padding it with
            its first items. (Default: ``False``)
    """

    _stream = _SHUFFLE_STREAM

    def __init__(self, n: int, *, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 drop_last: bool = False) -> None:
        if n < 1:
            raise DataError(f"cannot sample from an empty training set (n={n})")
        super().__init__(n, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)

    def _global_order(self, epoch: int) -> np.ndarray:
        return self._rng(epoch).permutation(self.global_length)


def class_aware_epoch_length(tag_counts: Sequence[int], epoch_divisor: float = 4.0) -> int:
    """Class-aware epoch length as the reference: ``int(max tag count x number of tags / divisor)``; tags
    without any track do not count."""
    counts = [int(c) for c in tag_counts if int(c) > 0]
    if not counts:
        raise DataError("class-aware sampling needs at least one tag with training tracks")
    return int(max(counts) * len(counts) / epoch_divisor)


class _Cycle:
    """Endless shuffled cycle over ``items``: reshuffled each time it wraps (the reference RandomCycleIter)."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator) -> None:
        self.items = np.asarray(items)
        self.rng = rng
        self.order = rng.permutation(self.items)
        self.pos = 0

    def next(self) -> int:
        if self.pos == len(self.order):
            self.order = self.rng.permutation(self.items)
            self.pos = 0
        value = self.order[self.pos]
        self.pos += 1
        return int(value)


class ClassAwareSampler(_EpochSampler):
    """Class-aware sampling as the paper's reference code (Shen et al. / Wu et al.'s ClassAwareSampler).

    Tags are visited in a shuffled cycle (reshuffled after every pass); at each visit ``draws_per_tag``
    tracks are taken in a row from that tag's own shuffled cycle of tracks. An epoch has
    ``int(max tag count x number of tags / epoch_divisor)`` samples. Unlike the reference, whose cycles run
    on across epochs, each epoch starts fresh cycles from ``(seed, epoch)`` so any epoch can be regenerated
    exactly (resume, DDP); within an epoch the distribution is the same.

    Args:
        labels (array-like of shape (n_tracks, n_tags)): Multi-hot training targets.
        draws_per_tag (int, optional): Tracks drawn in a row per tag visit. (Default: ``3``)
        epoch_divisor (float, optional): The reference's ``reduce``. (Default: ``4``)
        seed (int, optional): Base seed. (Default: ``0``)
        num_replicas, rank, drop_last: As :class:`ShuffleSampler`.
    """

    _stream = _CLASS_AWARE_STREAM

    def __init__(self, labels: Any, *, draws_per_tag: int = 3, epoch_divisor: float = 4.0, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[0] == 0:
            raise DataError(f"labels must be a (n_tracks, n_tags) multi-hot matrix, got shape {labels.shape}")
        if draws_per_tag < 1:
            raise ConfigError(f"draws_per_tag must be >= 1, got {draws_per_tag}")
        if epoch_divisor <= 0:
            raise ConfigError(f"epoch_divisor must be > 0, got {epoch_divisor}")
        self.tag_tracks = [np.flatnonzero(labels[:, j] > 0) for j in range(labels.shape[1])]
        self.tags = np.array([j for j, t in enumerate(self.tag_tracks) if len(t)], dtype=np.int64)
        empty = labels.shape[1] - len(self.tags)
        if empty:
            log.warning("class-aware sampling: %d of %d tags have no training track and are never drawn",
                        empty, labels.shape[1])
        self.draws_per_tag = int(draws_per_tag)
        self.epoch_divisor = float(epoch_divisor)
        length = class_aware_epoch_length([len(t) for t in self.tag_tracks], epoch_divisor)
        if length < 1:
            raise DataError(f"class-aware epoch length is 0 (max tag count x tags / {epoch_divisor}); "
                            "lower sampling.epoch_divisor")
        super().__init__(length, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)

    def _global_order(self, epoch: int) -> np.ndarray:
        rng = self._rng(epoch)
        tag_cycle = _Cycle(self.tags, rng)
        track_cycles: dict[int, _Cycle] = {}
        out = np.empty(self.global_length, dtype=np.int64)
        i = 0
        while i < self.global_length:
            tag = tag_cycle.next()
            cycle = track_cycles.get(tag)
            if cycle is None:
                cycle = track_cycles[tag] = _Cycle(self.tag_tracks[tag], rng)
            for _ in range(min(self.draws_per_tag, self.global_length - i)):
                out[i] = cycle.next()
                i += 1
        return out
