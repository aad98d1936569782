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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np

from focaltag.audio.chunks import cut_chunks
from focaltag.errors import AudioDecodeError, ConfigError, DataError, FocaltagError
from focaltag.inference.adaptive import AdaptiveRule, ld_order
from focaltag.inference.chunking import ChunkPlan, ReadMethod, iter_chunks
from focaltag.inference.members import Optimize, Runtime, check_runtime, load_members
from focaltag.inference.precision import TagPrecision, is_reduced
from focaltag.inference.reading import (
    DECODER_ERRORS,
    Chunk,
    Failure,
    ReadSettings,
    Start,
    decode_failure,
    read_events,
)
from focaltag.models.ensemble import mean_probabilities
from focaltag.models.resolve import ModelSpecs, ResolvedModel, resolve_model

__all__ = ["Tagger", "TagResult", "TagFailure"]

logger = logging.getLogger(__name__)


@dataclass
class TagResult:
    """Tags of one track.

    ``probabilities`` maps every tag to its track-level probability (mean over chunks and models);
    ``chunk_probabilities`` (n_chunks, n_tags) and ``chunk_times`` (chunk start seconds) make a taggram;
    ``decisions`` maps each tag to ``probability > threshold`` (the MediaEval rule) given thresholds.
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
    precision: str = "fp32"  # the network's precision: "bf16" (autocast), "int8" or "fp32"
    model: str = ""  # the catalogue name or the checkpoint's file name ("+"-joined for several)
    chunks_used: int = 0  # chunks averaged (adaptive chunking may stop before the plan's count)
    chunks_planned: int = 0  # chunks of the fixed protocol for this track (the adaptive maximum)
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
    model: str = ""
    ok: bool = field(default=False, init=False)


Thresholds: TypeAlias = 'Literal["auto"] | float | Mapping[str, float] | str | os.PathLike[str] | None'
"""``"auto"`` (a catalogue model's own, else none), ``None`` (no decisions), one number for every tag, a
``{tag: threshold}`` mapping, or a file from ``focaltag evaluate --save-thresholds``."""


def _resolve_thresholds(thresholds: Thresholds, tag_names: Sequence[str],
                        own: Mapping[str, float] | None) -> np.ndarray | None:
    """Per-tag thresholds in tag order (see :data:`Thresholds`); ``own`` is the catalogue model's."""
    if isinstance(thresholds, str) and thresholds == "auto":
        thresholds = own
    if thresholds is None:
        return None
    if isinstance(thresholds, (int, float)):
        return np.full(len(tag_names), float(thresholds))
    from focaltag.evaluation.thresholds import load_thresholds, thresholds_array

    if isinstance(thresholds, (str, os.PathLike)):
        thresholds = load_thresholds(thresholds)
    return thresholds_array(thresholds, tag_names)


CPU_BATCH_SIZE = 4
"""Chunks per forward pass on a CPU: small enough that a batch's largest activations (the paper ResNet's first
block) stay in a CPU's last-level cache; ``bench/tag.py`` measures it against larger batches (README)."""

GPU_BATCH_SIZE = 16
"""Chunks per forward pass on a GPU, where larger batches keep the device busy."""

RECHECK_KEEP_BYTES = 256 * 2 ** 20
"""A bf16 track's decoded chunks are kept until its result is final, so a float32 re-check needs no second
decode, when they take at most this many bytes (16 chunks of any shipped architecture fit); longer plans (a
sliding window over a long file) are read again instead."""

BF16_RECHECK_MARGIN = 0.005
"""Probability gap under which a bf16 result is recomputed in float32 (see ``Tagger``'s ``recheck_margin``).

Twice bf16's measured error: with the spectrogram-reading layers computed to float32 grade
(:data:`focaltag.inference.precision.FP32_MODULES`, :class:`focaltag.inference.compensated.CompensatedBf16`) bf16
moved a track's probabilities by at most 1.9e-3 (Won et al.'s FCN), 1.7e-3 (CRNN) and 1.1e-3 (Musicnn) on the
six shared recordings, so with an error bound of 2.5e-3 two probabilities more than 0.005 apart keep their
order (``tests/integration/test_precision.py`` asserts the bound and the top-5 equality). Genuine near-ties
remain and are still recomputed: FCN ranks two of the six tracks' top-5 tags 1e-4 and 9e-4 apart, which no
bf16 rounding resolves; the test re-checks 1 or 2 tracks in 6 per trained model. Earlier margins: 0.006 (every
layer in bf16, CRNN's 6.2e-3 error), 0.004 (float32 islands under autocast, 1.3e-3)."""


def _member_margin(member: Any) -> float:
    """The re-check margin a member's precision needs (0 for float32 members)."""
    precision = getattr(member, "precision", "fp32")
    if precision == "bf16":
        return BF16_RECHECK_MARGIN
    return float(getattr(member, "recheck_margin", 0.0)) if precision == "int8" else 0.0


class _Pending:
    """Accumulates one file's chunk probabilities until every chunk has been through every model."""

    def __init__(self, index: int, source: str, plan: ChunkPlan | None, n_tags: int,
                 wave: np.ndarray | None = None) -> None:
        self.index, self.source, self.plan, self.wave = index, source, plan, wave
        self.chunks: dict[int, np.ndarray] | None = None  # kept for a float32 re-check (see Tagger._keeps_chunks)
        self.error: Exception | None = None
        self.rechecked = False
        n = plan.n_chunks if plan else 0
        self.probs = np.zeros((n, n_tags), dtype=np.float64)
        self.remaining = n
        self.produced = plan is None  # all chunks handed over by the reader
        # adaptive chunking: chunks in low-discrepancy order; ``used`` is set once the outcome is settled
        self.order = ld_order(n)
        self.computed = np.zeros(n, dtype=bool)
        self.checked = 0  # chunks (a prefix of ``order``) already judged by the stopping rule
        self.used: list[int] | None = None


class Tagger:
    """Whole-track tagger over one model or an ensemble.

    Args:
        model_or_models: a model, a path (checkpoint, run folder, ensemble folder, ``.onnx``), a catalogue name
            (a ``str``; pulled on first use), or a list of them; several are averaged (mean of sigmoid
            probabilities; identical tag lists required). Resolved once by
            :func:`focaltag.models.resolve.resolve_model` (an already resolved model is taken as it is).
        n_chunks (int): evenly spaced chunks per track, the same positions as evaluation. (Default: ``16``)
        hop_seconds (float | None): sliding window with this hop instead of ``n_chunks``. (Default: ``None``)
        batch_size (int | None): chunks per forward pass; chunks of several files share a batch. (Default:
            ``None`` = :data:`CPU_BATCH_SIZE` (4) on CPU, :data:`GPU_BATCH_SIZE` (16) on GPU)
        runtime (str): ``"torch"`` or ``"onnx"`` (onnxruntime; needs ``pip install 'focaltag[onnx]'``).
        device (str): torch device. (Default: ``"cpu"``)
        optimize (str): ``"none"``, ``"channels_last"`` (float32 in channels_last; same outputs to 1e-7, not
            faster on CPU in ``bench/tag.py``, so not the default; bf16 always runs channels_last) or ``"compile"``
            (channels_last + ``torch.compile``; a one-off compilation). The model is put in eval mode and converted
            in place. (Default: ``"none"``)
        precision (str): ``"auto"`` (bf16 on CPUs with AMX / AVX512-BF16 and on bf16 GPUs; int8 for the paper
            ResNet on other CPUs with onnxruntime installed, :mod:`focaltag.inference.int8`; float32 elsewhere),
            ``"bf16"``, ``"int8"`` or ``"fp32"``. bf16 runs a copy of the network made by
            :func:`focaltag.inference.precision.bf16_inference_model` (bf16 weights, channels_last, the layers of
            FCN, CRNN and the paper ResNet that read the spectrogram computed to float32 grade), which keeps
            probabilities within :data:`BF16_RECHECK_MARGIN` / 2 of float32 (speed: ``bench/tag.py``). ``auto``
            keeps the architectures in ``precision.AUTO_FP32_ON_CPU`` float32 on CPUs.
            ``"fp32"`` is bit-identical to a float32 run. Each member's resolved precision is in
            ``self.member_precisions``; ``self.precision`` and every result's ``precision`` name them.
            (Default: ``"auto"``)
        thresholds: per-tag decision thresholds; adds ``decisions`` to every result. ``"auto"``: a catalogue
            model's own calibrated thresholds where it has them (``usc-sail-2020`` and its members), else none;
            ``None``: no decisions; a mapping, a file from ``focaltag evaluate --save-thresholds`` or one number
            overrides them. (Default: ``"auto"``)
        top_k (int): length of ``TagResult.top``. (Default: ``5``)
        read (str): how files are read: ``"auto"`` (seek when possible), ``"seek"``, ``"stream"``, ``"whole"``.
        prefetch (bool): decode ahead in background threads while the network runs; ``False`` decodes in the
            calling thread (as ``workers=0``). (Default: ``True``)
        workers (int | None): decoding threads (files are read in parallel, their chunks share batches); memory
            stays bounded by a queue of about two batches of chunks plus one file being read per worker
            (:func:`focaltag.inference.reading.read_events`). ``None``: one budget with the network's intra-op
            threads (:func:`focaltag._resources.thread_budget`: from 4 cores on a quarter of the cores, at most 2,
            decode and the network gets the rest, never more than the cores together; below 4 cores one decoding
            thread beside a network on every core, which measured fastest). A number is taken as given.
            (Default: ``None``)
        recheck_margin (float | None): with bf16 or int8, a track whose top-k order (or a threshold decision)
            hangs on a probability gap smaller than this is read again and recomputed in float32, so the reduced
            precision does not change the top tags or decisions float32 gives; such a result reports
            ``precision`` ``"fp32"``. ``None``: the largest margin the members' precisions need, each about twice
            its measured error bound (bf16: :data:`BF16_RECHECK_MARGIN`; int8:
            ``focaltag.inference.int8.INT8_RECHECK_MARGIN``), so only genuine near-ties pay for it; ``0`` turns
            it off. (Default: ``None``)
        adaptive (bool | AdaptiveRule): adaptive chunking: visit the ``n_chunks`` positions in a low-discrepancy
            order and stop once more chunks cannot change the decisions (or the ordered top-k) under the bound of
            :mod:`focaltag.inference.adaptive` (at least ``MIN_CHUNKS`` = 4, at most ``n_chunks``); each result's
            ``chunks_used`` says how many it averaged. Not with ``hop_seconds``. ``focaltag tag --chunks auto``
            (its default) turns it on; ``predict`` and evaluation keep the fixed protocol. (Default: ``False``)
    """

    def __init__(self, model_or_models: ModelSpecs | ResolvedModel, *, n_chunks: int = 16, hop_seconds: float | None = None,
                 batch_size: int | None = None, runtime: Runtime = "torch", device: str = "cpu",
                 optimize: Optimize = "none", precision: TagPrecision = "auto", thresholds: Thresholds = "auto",
                 top_k: int = 5, read: ReadMethod = "auto", prefetch: bool = True, workers: int | None = None,
                 recheck_margin: float | None = None, adaptive: bool | AdaptiveRule = False) -> None:
        if n_chunks < 1:
            raise ConfigError(f"n_chunks must be >= 1, got {n_chunks}")
        if hop_seconds is not None and not hop_seconds > 0:
            raise ConfigError(f"hop_seconds must be > 0, got {hop_seconds}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ConfigError(f"batch_size must be an integer >= 1 (or None for the default), got {batch_size!r}")
        if top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {top_k}")
        if read not in ("auto", "seek", "stream", "whole"):
            raise ConfigError(f"read must be 'auto', 'seek', 'stream' or 'whole', got {read!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ConfigError(f"workers must be an integer >= 0 (decoding threads), got {workers!r}")
        if recheck_margin is not None and not 0 <= recheck_margin < 1:
            raise ConfigError(f"recheck_margin must be in [0, 1), got {recheck_margin}")
        if adaptive and hop_seconds is not None:
            raise ConfigError("adaptive chunking (--chunks auto) needs evenly spaced chunks, not a sliding window "
                              "(--hop); give --chunks N with --hop")
        from focaltag._resources import thread_budget, tune_allocator

        check_runtime(runtime, device, precision)  # a bad --device is one line before any model is read
        tune_allocator()  # keep activation buffers in the process (glibc): see focaltag._resources
        resolved = model_or_models if isinstance(model_or_models, ResolvedModel) else resolve_model(model_or_models)
        self.resolved = resolved
        self.members = load_members(resolved, runtime=runtime, device=device, optimize=optimize, precision=precision)
        self.weights = np.asarray(resolved.weights, dtype=np.float64)
        self.member_precisions: tuple[str, ...] = tuple(m.precision for m in self.members)
        self.model_name: str = resolved.label
        first = self.members[0]
        self.tag_names: tuple[str, ...] = first.tag_names
        self.sample_rate, self.chunk_samples = first.sample_rate, first.chunk_samples
        on_cpu = all(str(getattr(m, "device", "cpu")).startswith("cpu") for m in self.members)
        self.batch_size: int = batch_size or (CPU_BATCH_SIZE if on_cpu else GPU_BATCH_SIZE)
        self.n_chunks, self.hop_seconds = n_chunks, hop_seconds
        self.top_k, self.read, self.prefetch = top_k, read, prefetch
        if workers is None and on_cpu:  # one budget: decoding threads + the network's threads <= the cores
            import torch

            workers, intra = thread_budget(2)
            if torch.get_num_threads() > intra:
                torch.set_num_threads(intra)
        self.workers = (2 if workers is None else workers) if prefetch else 0
        self.recheck_margin = float(max((_member_margin(m) for m in self.members), default=0.0)
                                    if recheck_margin is None else recheck_margin)
        self.n_rechecked = 0  # bf16 results recomputed in float32 so far (bench/tag.py reports the rate)
        self.thresholds = _resolve_thresholds(thresholds, self.tag_names, resolved.thresholds)
        self.adaptive: AdaptiveRule | None = (adaptive if isinstance(adaptive, AdaptiveRule)
                                              else AdaptiveRule() if adaptive else None)

    @property
    def precision(self) -> str:
        """The members' precisions as one label (``"bf16"``, ``"fp32"``, ``"bf16+fp32"``): for logs and results."""
        return "+".join(sorted(set(self.member_precisions)))

    @property
    def reduced(self) -> bool:
        """Whether any member approximates float32 (bf16, int8), so close calls are re-checked in float32."""
        return any(is_reduced(p) for p in self.member_precisions)

    # -- the network ---------------------------------------------------------------------------------------
    def predict_chunks(self, chunks: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Ensemble probabilities (n, n_tags) of waveform chunks (n, chunk_samples) at ``sample_rate``.

        ``precision="fp32"`` runs bf16 members in float32 for this call (the close-call re-check).
        """
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != self.chunk_samples:
            raise DataError(f"chunks must have shape (n, {self.chunk_samples}), got {chunks.shape}")
        out = np.zeros((len(chunks), len(self.tag_names)), dtype=np.float64)
        for lo in range(0, len(chunks), self.batch_size):
            batch = chunks[lo:lo + self.batch_size]
            out[lo:lo + len(batch)] = mean_probabilities(
                (m(batch) if precision is None or m.precision == precision else m(batch, precision=precision)
                 for m in self.members), self.weights)
        return out

    # -- bf16 close calls ----------------------------------------------------------------------------------
    def _close_call(self, track: np.ndarray) -> bool:
        """True when bf16 rounding could change the top-k order or a decision of this track."""
        margin = self.recheck_margin
        if margin <= 0 or not self.reduced:
            return False
        if self.top_k > 0 and track.size > 1:
            top = np.sort(track)[::-1][: self.top_k + 1]
            if float(np.min(top[:-1] - top[1:])) < margin:
                return True
        return self.thresholds is not None and bool(np.any(np.abs(track - self.thresholds) < margin))

    def _keeps_chunks(self, plan: ChunkPlan) -> bool:
        """Whether a file's decoded chunks are kept for a possible float32 re-check (bf16, within the budget)."""
        return (self.reduced and self.recheck_margin > 0
                and plan.n_chunks * plan.chunk_samples * 4 <= RECHECK_KEEP_BYTES)

    def _recheck(self, item: _Pending) -> None:
        """Read ``item`` again and recompute its chunk probabilities in float32."""
        plan = item.plan
        assert plan is not None
        try:
            rows = item.used if item.used is not None else list(range(plan.n_chunks))
            if item.chunks is not None and all(i in item.chunks for i in rows):
                pairs = iter(item.chunks.items())  # kept from the bf16 pass: no second decode
            elif item.wave is not None:
                pairs = cut_chunks(item.wave, plan.starts, plan.chunk_samples)
            else:
                pairs = iter_chunks(plan, method=self.read)
            chunks = dict(pairs)
            item.probs[rows] = self.predict_chunks(np.stack([chunks[i] for i in rows]), precision="fp32")
            item.rechecked = True
            self.n_rechecked += 1
        except FocaltagError as err:
            item.error = err
        except DECODER_ERRORS as err:
            item.error = decode_failure(item.source, err)

    # -- planning ------------------------------------------------------------------------------------------
    @property
    def hop_samples(self) -> int | None:
        return None if self.hop_seconds is None else max(1, int(round(self.hop_seconds * self.sample_rate)))

    def _settings(self) -> ReadSettings:
        """How inputs are planned and read now (``n_chunks`` and ``hop_seconds`` may change between calls)."""
        return ReadSettings(self.sample_rate, self.chunk_samples, n_chunks=self.n_chunks,
                            hop_samples=self.hop_samples, method=self.read, adaptive=self.adaptive is not None)

    def plan(self, path: str | os.PathLike[str]) -> ChunkPlan:
        """Chunk positions for a file, from its header only."""
        return self._settings().plan(path)

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

        ``workers`` threads decode the next files while the network runs; chunks of whichever files are ready
        share forward passes, so many short files go as fast as a few long ones and a slow file does not
        leave the network idle. Results still come out in input order.
        """
        n_tags = len(self.tag_names)
        by_index: dict[int, _Pending] = {}
        batch: list[tuple[_Pending, int, np.ndarray]] = []
        next_out = 0  # index of the next result to yield

        def run_batch() -> None:
            batch[:] = [b for b in batch if b[0].used is None]  # chunks of settled tracks are not needed
            if not batch:
                return
            probs = self.predict_chunks(np.stack([c for _, _, c in batch]))
            for (item, ci, chunk), p in zip(batch, probs, strict=True):
                item.probs[ci] = p
                item.remaining -= 1
                item.computed[ci] = True
                if item.chunks is not None:
                    item.chunks[ci] = chunk
            if self.adaptive is not None:
                for item in {id(b[0]): b[0] for b in batch}.values():
                    self._judge(item)
            batch.clear()

        def drain() -> Iterator[TagResult | TagFailure]:
            nonlocal next_out
            while (item := by_index.get(next_out)) is not None and (
                    item.error is not None or item.used is not None or (item.produced and item.remaining == 0)):
                del by_index[next_out]
                next_out += 1
                rows = item.used if item.used is not None else slice(None)
                if item.error is None and self._close_call(item.probs[rows].mean(axis=0)):
                    self._recheck(item)
                item.chunks = None
                yield self._finish(item)

        settings = self._settings()
        events = read_events(inputs, sr, settings, workers=self.workers,
                             queue_size=max(2 * self.batch_size, 2 * self.workers))
        for event in events:
            if isinstance(event, Start):
                item = by_index[event.index] = _Pending(event.index, event.plan.source, event.plan, n_tags, event.wave)
                if event.wave is None and self._keeps_chunks(event.plan):
                    item.chunks = {}
            elif isinstance(event, Failure):
                if event.index < next_out:  # settled and written already (adaptive): the rest was not needed
                    continue
                item = by_index.get(event.index) or by_index.setdefault(
                    event.index, _Pending(event.index, event.source, None, n_tags))
                item.error = event.error
                batch[:] = [b for b in batch if b[0] is not item]
            elif isinstance(event, Chunk):
                pending = by_index.get(event.index)
                if pending is None or pending.used is not None:  # settled (adaptive), maybe written already
                    continue
                batch.append((pending, event.position, event.samples))
                if len(batch) >= self.batch_size:
                    run_batch()
            elif event.index in by_index:
                by_index[event.index].produced = True
            yield from drain()
        run_batch()
        yield from drain()

    def tag_planned(self, plan: ChunkPlan, chunks: np.ndarray) -> TagResult | TagFailure:
        """Tag one file already read into the chunks of its ``plan`` (n_chunks, chunk_samples, in plan order).

        The model half of :meth:`tag_many` (the same forward passes, adaptive stopping rule, close-call re-check
        and result), for pipelines that read files elsewhere: ``focaltag.ray`` reads in CPU tasks and runs this in
        model actors. With adaptive chunking the chunks go in the rule's order and stop at the same checkpoint.
        """
        item = _Pending(0, plan.source, plan, len(self.tag_names))
        item.remaining, item.produced = 0, True
        order = list(item.order) if self.adaptive is not None else list(range(plan.n_chunks))
        try:  # batch by batch in the rule's order, so adaptive chunking stops where tag_many would
            for lo in range(0, len(order), self.batch_size):
                rows = order[lo:lo + self.batch_size]
                item.probs[rows] = self.predict_chunks(np.asarray(chunks)[rows])
                item.computed[rows] = True
                self._judge(item)
                if item.used is not None:
                    break
        except FocaltagError as err:
            item.error = err
        used: list[int] | slice = item.used if item.used is not None else slice(None)
        if item.error is None and self._close_call(item.probs[used].mean(axis=0)):
            item.chunks = dict(enumerate(np.asarray(chunks, dtype=np.float32)))
            self._recheck(item)
        item.chunks = None
        return self._finish(item)

    def _judge(self, item: _Pending) -> None:
        """Adaptive chunking: apply the stopping rule at every checkpoint whose chunks are all computed.

        Only the first ``k`` chunks in low-discrepancy order count at checkpoint ``k``, whatever else was computed
        in the same batches, so a result does not depend on batching or decoding speed.
        """
        rule = self.adaptive
        if rule is None or item.used is not None or item.plan is None:
            return
        n = item.plan.n_chunks
        ready = item.checked
        while ready < n and item.computed[item.order[ready]]:
            ready += 1
        for k in range(item.checked + 1, ready + 1):
            if rule.is_checkpoint(k, n) and rule.stop(item.probs[item.order[:k]], n, top_k=self.top_k,
                                                      thresholds=self.thresholds):
                item.used = sorted(item.order[:k])
                break
        item.checked = ready

    def _finish(self, item: _Pending) -> TagResult | TagFailure:
        plan = item.plan
        if item.error is not None or plan is None:
            logger.warning("failed: %s", item.error)
            return TagFailure(item.source, str(item.error or "unknown error"), item.error, model=self.model_name)
        rows = item.used if item.used is not None else list(range(plan.n_chunks))
        track = item.probs[rows].mean(axis=0)
        tags = self.tag_names
        probabilities = {t: float(p) for t, p in zip(tags, track, strict=True)}
        order = np.argsort(-track, kind="stable")[: self.top_k]
        decisions = None
        if self.thresholds is not None:
            from focaltag.evaluation.thresholds import decide  # the official rule (score > threshold)

            decisions = dict(zip(tags, map(bool, decide(track, self.thresholds)), strict=True))
        return TagResult(
            file=plan.source, duration=plan.duration, tag_names=tags, probabilities=probabilities,
            top=[(tags[j], float(track[j])) for j in order], chunk_probabilities=item.probs[rows].astype(np.float32),
            chunk_times=plan.times[rows], chunk_seconds=self.chunk_samples / self.sample_rate, decisions=decisions,
            precision="fp32" if item.rechecked else self.precision, model=self.model_name,
            chunks_used=len(rows), chunks_planned=plan.n_chunks,
        )

