"""Tag whole tracks: cut chunks that cover the track, run every model, average sigmoid probabilities.

Example::

    >>> from focaltag import Tagger
    >>> tagger = Tagger("runs/focal/best.pt")            # or a list of models / an ensemble folder
    >>> result = tagger.tag("song.mp3")
    >>> result.top[:3]                                      # [(tag, probability), ...]
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from focaltag.errors import AudioDecodeError, ConfigError, DataError, FocaltagError
from focaltag.inference.chunking import (
    ChunkPlan,
    ReadMethod,
    chunks_from_waveform,
    iter_chunks,
    plan_file,
    plan_starts,
)
from focaltag.inference.ensemble import Optimize, Runtime, load_members

__all__ = ["Tagger", "TagResult", "TagFailure"]

logger = logging.getLogger(__name__)


@dataclass
class TagResult:
    """Tags of one track.

    ``probabilities`` maps every tag to its track-level probability (mean over chunks and models);
    ``chunk_probabilities`` (n_chunks, n_tags) and ``chunk_times`` (chunk start seconds) make a taggram;
    ``decisions`` maps each tag to ``probability >= threshold`` when the tagger has thresholds.
    """

    file: str
    duration: float
    tag_names: tuple[str, ...]
    probabilities: dict[str, float]
    top: list[tuple[str, float]]
    chunk_probabilities: np.ndarray = field(repr=False)
    chunk_times: np.ndarray = field(repr=False)
    chunk_seconds: float = 0.0
    decisions: dict[str, bool] | None = None
    ok: bool = field(default=True, init=False)

    def as_array(self) -> np.ndarray:
        """Probabilities as a float32 vector in ``tag_names`` order."""
        return np.asarray([self.probabilities[t] for t in self.tag_names], dtype=np.float32)


@dataclass
class TagFailure:
    """A file that could not be tagged, with the one-line reason."""

    file: str
    error: str
    exception: Exception | None = field(default=None, repr=False, compare=False)
    ok: bool = field(default=False, init=False)


def _resolve_thresholds(thresholds: Any, tag_names: Sequence[str]) -> np.ndarray | None:
    """Per-tag thresholds (mapping, ``focaltag evaluate --save-thresholds`` file, or one number) in tag order."""
    if thresholds is None:
        return None
    if isinstance(thresholds, (int, float)):
        return np.full(len(tag_names), float(thresholds))
    from focaltag.evaluation.thresholds import load_thresholds, thresholds_array

    if isinstance(thresholds, (str, os.PathLike)):
        thresholds = load_thresholds(thresholds)
    return thresholds_array(thresholds, tag_names)


class _Pending:
    """Accumulates one file's chunk probabilities until every chunk has been through every model."""

    def __init__(self, index: int, source: str, plan: ChunkPlan | None, n_tags: int) -> None:
        self.index, self.source, self.plan = index, source, plan
        self.error: Exception | None = None
        n = plan.n_chunks if plan else 0
        self.probs = np.zeros((n, n_tags), dtype=np.float64)
        self.remaining = n
        self.produced = plan is None  # all chunks handed over by the reader


class Tagger:
    """Whole-track tagger over one model or an ensemble.

    Args:
        model_or_models: a model, a path (checkpoint, run folder, ensemble folder, ``.onnx``) or a list of them;
            several are averaged (mean of sigmoid probabilities; identical tag lists required).
        n_chunks (int): evenly spaced chunks per track, the same positions as evaluation. (Default: ``16``)
        hop_seconds (float | None): sliding window with this hop instead of ``n_chunks``. (Default: ``None``)
        batch_size (int): chunks per forward pass; chunks of several files share a batch. (Default: ``16``)
        runtime (str): ``"torch"`` or ``"onnx"`` (onnxruntime; needs ``pip install 'focaltag[onnx]'``).
        device (str): torch device. (Default: ``"cpu"``)
        optimize (str): ``"none"``, ``"channels_last"`` (~1.3x faster on CPU, same outputs to 1e-7) or
            ``"compile"`` (channels_last + ``torch.compile``; a one-off compilation of about a minute). The
            model is put in eval mode and converted in place. (Default: ``"channels_last"``)
        thresholds: per-tag decision thresholds (dict, a file from ``focaltag evaluate --save-thresholds``,
            or one number); adds ``decisions`` to every result. (Default: ``None``)
        top_k (int): length of ``TagResult.top``. (Default: ``5``)
        read (str): how files are read: ``"auto"`` (seek when possible), ``"seek"``, ``"stream"``, ``"whole"``.
        prefetch (bool): decode the next file in a background thread while the network runs. (Default: ``True``)
    """

    def __init__(self, model_or_models: Any, *, n_chunks: int = 16, hop_seconds: float | None = None,
                 batch_size: int = 16, runtime: Runtime = "torch", device: str = "cpu",
                 optimize: Optimize = "channels_last", thresholds: Any = None, top_k: int = 5,
                 read: ReadMethod = "auto", prefetch: bool = True) -> None:
        if n_chunks < 1:
            raise ConfigError(f"n_chunks must be >= 1, got {n_chunks}")
        if hop_seconds is not None and not hop_seconds > 0:
            raise ConfigError(f"hop_seconds must be > 0, got {hop_seconds}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {top_k}")
        if read not in ("auto", "seek", "stream", "whole"):
            raise ConfigError(f"read must be 'auto', 'seek', 'stream' or 'whole', got {read!r}")
        self.members, self.weights = load_members(model_or_models, runtime=runtime, device=device, optimize=optimize)
        first = self.members[0]
        self.tag_names: tuple[str, ...] = first.tag_names
        self.sample_rate, self.chunk_samples = first.sample_rate, first.chunk_samples
        self.n_chunks, self.hop_seconds, self.batch_size = n_chunks, hop_seconds, batch_size
        self.top_k, self.read, self.prefetch = top_k, read, prefetch
        self.thresholds = _resolve_thresholds(thresholds, self.tag_names)

    # -- the network ---------------------------------------------------------------------------------------
    def predict_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """Ensemble probabilities (n, n_tags) of waveform chunks (n, chunk_samples) at ``sample_rate``."""
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != self.chunk_samples:
            raise DataError(f"chunks must have shape (n, {self.chunk_samples}), got {chunks.shape}")
        out = np.zeros((len(chunks), len(self.tag_names)), dtype=np.float64)
        for lo in range(0, len(chunks), self.batch_size):
            batch = chunks[lo:lo + self.batch_size]
            for member, weight in zip(self.members, self.weights, strict=True):
                out[lo:lo + len(batch)] += weight * member(batch)
        return out

    # -- planning ------------------------------------------------------------------------------------------
    @property
    def hop_samples(self) -> int | None:
        return None if self.hop_seconds is None else max(1, int(round(self.hop_seconds * self.sample_rate)))

    def _plan_waveform(self, wave: Any, sr: int | None, name: str) -> tuple[ChunkPlan, np.ndarray]:
        """Mono float32 at the model rate plus its chunk plan."""
        if sr is None:
            raise ConfigError("sr is required when tagging a waveform (its sample rate in Hz)")
        if hasattr(wave, "detach"):
            wave = wave.detach().cpu().numpy()
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:
            if wave.shape[0] > 8:
                raise DataError(f"waveform must be (samples,) or (channels, samples), got shape {wave.shape}; "
                                "transpose a (samples, channels) array")
            wave = wave.mean(axis=0)
        if wave.ndim != 1 or wave.size == 0:
            raise DataError(f"waveform must be a non-empty 1-D or (channels, samples) array, got shape {wave.shape}")
        if not np.all(np.isfinite(wave)):
            raise DataError("waveform contains NaN or inf samples")
        if int(sr) != self.sample_rate:
            import soxr

            wave = soxr.resample(wave, int(sr), self.sample_rate).astype(np.float32, copy=False)
        starts = plan_starts(len(wave), self.chunk_samples, n_chunks=self.n_chunks, hop_samples=self.hop_samples)
        return ChunkPlan(name, self.sample_rate, len(wave), self.chunk_samples, tuple(starts)), wave

    def plan(self, path: str | os.PathLike[str]) -> ChunkPlan:
        """Chunk positions for a file, from its header only."""
        return plan_file(path, sample_rate=self.sample_rate, chunk_samples=self.chunk_samples,
                         n_chunks=self.n_chunks, hop_samples=self.hop_samples)

    # -- public API ----------------------------------------------------------------------------------------
    def tag(self, path_or_waveform: Any, sr: int | None = None) -> TagResult:
        """Tag one file (path) or waveform (1-D or (channels, samples) with its ``sr``); errors raise."""
        with contextlib.closing(self.tag_many([path_or_waveform], sr=sr)) as results:
            result = next(results)
        if isinstance(result, TagFailure):
            raise result.exception or AudioDecodeError(result.error)
        return result

    def tag_many(self, inputs: Iterable[Any], *, sr: int | None = None) -> Iterator[TagResult | TagFailure]:
        """Tag many files in input order; a file that fails becomes a ``TagFailure`` and the rest go on.

        Chunks of consecutive files share forward passes, and the next file is decoded while the
        network runs, so many short files go as fast as a few long ones.
        """
        n_tags = len(self.tag_names)
        pending: deque[_Pending] = deque()
        by_index: dict[int, _Pending] = {}
        batch: list[tuple[_Pending, int, np.ndarray]] = []

        def run_batch() -> None:
            if not batch:
                return
            probs = self.predict_chunks(np.stack([c for _, _, c in batch]))
            for (item, ci, _), p in zip(batch, probs, strict=True):
                item.probs[ci] = p
                item.remaining -= 1
            batch.clear()

        def drain(final: bool) -> Iterator[TagResult | TagFailure]:
            while pending and (final or pending[0].error is not None
                               or (pending[0].produced and pending[0].remaining == 0)):
                item = pending.popleft()
                by_index.pop(item.index, None)
                yield self._finish(item)

        for event in self._events(inputs, sr):
            kind, index = event[0], event[1]
            if kind == "start":
                item = _Pending(index, event[2].source, event[2], n_tags)
                pending.append(item)
                by_index[index] = item
            elif kind == "fail":
                item = by_index.get(index)
                if item is None:
                    item = _Pending(index, event[2], None, n_tags)
                    pending.append(item)
                    by_index[index] = item
                item.error = event[3]
                batch[:] = [b for b in batch if b[0] is not item]
            elif kind == "chunk":
                batch.append((by_index[index], event[2], event[3]))
                if len(batch) >= self.batch_size:
                    run_batch()
            elif kind == "end":
                by_index[index].produced = True
            yield from drain(final=False)
        run_batch()
        yield from drain(final=True)

    # -- internals -----------------------------------------------------------------------------------------
    def _read_one(self, index: int, item: Any, sr: int | None) -> Iterator[tuple]:
        """Events for one input: ("start", i, plan), ("chunk", i, ci, chunk)..., ("end", i) or ("fail", i, name, msg)."""
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"<waveform {index}>"
        try:
            if isinstance(item, (str, os.PathLike)):
                plan = self.plan(item)
                chunks = iter_chunks(plan, method=self.read)
            else:
                plan, wave = self._plan_waveform(item, sr, name)
                chunks = chunks_from_waveform(wave, plan.starts, plan.chunk_samples)
            yield ("start", index, plan)
            for ci, chunk in chunks:
                yield ("chunk", index, ci, chunk)
            yield ("end", index)
        except FocaltagError as err:
            yield ("fail", index, name, err)
        except (OSError, RuntimeError, ValueError, TypeError, EOFError) as err:  # decoder errors not yet wrapped
            msg = f"cannot decode {name}: {type(err).__name__}: {err}".splitlines()[0]
            yield ("fail", index, name, AudioDecodeError(msg))

    def _events(self, inputs: Iterable[Any], sr: int | None) -> Iterator[tuple]:
        """All inputs' events in order; with ``prefetch`` a thread decodes ahead (bounded queue)."""
        if not self.prefetch:
            for index, item in enumerate(inputs):
                yield from self._read_one(index, item, sr)
            return
        q: queue.Queue = queue.Queue(maxsize=2 * self.batch_size)
        stop = threading.Event()
        done = object()

        def put(event: Any) -> bool:
            """Queue ``event`` unless the consumer has gone away (then False)."""
            while not stop.is_set():
                try:
                    q.put(event, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for index, item in enumerate(inputs):
                    for event in self._read_one(index, item, sr):
                        if not put(event):
                            return
                put(done)
            except BaseException as err:  # a bug in the reader must surface in the caller, not die here
                put(("crash", err))

        thread = threading.Thread(target=produce, name="focaltag-decode", daemon=True)
        thread.start()
        try:
            while True:
                event = q.get()
                if event is done:
                    return
                if event[0] == "crash":
                    raise event[1]
                yield event
        finally:
            stop.set()
            thread.join(timeout=5)

    def _finish(self, item: _Pending) -> TagResult | TagFailure:
        plan = item.plan
        if item.error is not None or plan is None:
            logger.warning("failed: %s", item.error)
            return TagFailure(item.source, str(item.error or "unknown error"), item.error)
        track = item.probs.mean(axis=0)
        tags = self.tag_names
        probabilities = {t: float(p) for t, p in zip(tags, track, strict=True)}
        order = np.argsort(-track, kind="stable")[: self.top_k]
        decisions = None
        if self.thresholds is not None:
            decisions = {t: bool(p >= th) for t, p, th in zip(tags, track, self.thresholds, strict=True)}
        return TagResult(
            file=plan.source, duration=plan.duration, tag_names=tags, probabilities=probabilities,
            top=[(tags[j], float(track[j])) for j in order], chunk_probabilities=item.probs.astype(np.float32),
            chunk_times=plan.times, chunk_seconds=self.chunk_samples / self.sample_rate, decisions=decisions,
        )

