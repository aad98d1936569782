"""Tag whole tracks: the track scheduler over a :class:`~focaltag.inference.predictor.Predictor`.

Example::

    >>> from focaltag import InferenceOptions, Tagger, configure_runtime
    >>> configure_runtime()                                          # threads and allocator, once per process
    >>> tagger = Tagger("runs/focal/best.pt", InferenceOptions(embeddings=True))
    >>> result = tagger.tag("song.mp3")
    >>> result.top[:3], result.embedding.shape                       # [(tag, probability), ...], (D,)

The scheduler reads files (decoding threads, :mod:`focaltag.inference.reading`), packs chunks of whichever files
are ready into batches, stops early under adaptive chunking, re-checks close calls in float32 and assembles
whole-track results. The predictor does the forward passes; the model is resolved once, before either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from focaltag.audio.chunks import cut_chunks
from focaltag.errors import AudioDecodeError, ConfigError, DataError, FocaltagError
from focaltag.inference.adaptive import AdaptiveRule, ld_order
from focaltag.inference.chunking import ChunkPlan, ReadMethod, iter_chunks
from focaltag.inference.members import Member
from focaltag.inference.options import LEGACY_KEYWORDS, InferenceOptions, Thresholds, resolve_thresholds
from focaltag.inference.predictor import Predictor, close_call
from focaltag.inference.reading import (
    DECODER_ERRORS,
    Chunk,
    Failure,
    ReadSettings,
    Start,
    decode_failure,
    read_events,
)
from focaltag.models.resolve import ModelSpecs, ResolvedModel, resolve_model

__all__ = ["Tagger", "TagResult", "TagFailure", "Thresholds", "AudioInput"]

AudioInput: TypeAlias = "str | os.PathLike[str] | np.ndarray"
"""What a tagger reads: a file path, or a waveform (1-D, or (channels, samples)) given with its sample rate."""

logger = logging.getLogger(__name__)


@dataclass
class TagResult:
    """Tags of one track.

    ``probabilities`` maps every tag to its track-level probability (mean over chunks and models);
    ``chunk_probabilities`` (n_chunks, n_tags) and ``chunk_times`` (chunk start seconds) make a taggram;
    ``decisions`` maps each tag to ``probability > threshold`` (the MediaEval rule) given thresholds;
    ``embedding`` (with ``InferenceOptions(embeddings=True)``) is the mean over the chunks used of the layer before
    the classifier, the members' vectors concatenated in member order, from the model named ``embedding_model``.
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
    runtime: str = "torch"  # what ran it: "torch", "onnxruntime" (int8, or float32 where it is faster) or both
    model: str = ""  # the catalogue name or the checkpoint's file name ("+"-joined for several)
    chunks_used: int = 0  # chunks averaged (adaptive chunking may stop before the plan's count)
    chunks_planned: int = 0  # chunks of the fixed protocol for this track (the adaptive maximum)
    embedding: np.ndarray | None = field(default=None, repr=False)
    embedding_model: str = ""
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


CPU_BATCH_SIZE = 4
"""Chunks per forward pass on a CPU: small enough that a batch's largest activations (the paper ResNet's first
block) stay in a CPU's last-level cache; ``bench/tag.py`` measures it against larger batches (README)."""

GPU_BATCH_SIZE = 16
"""Chunks per forward pass on a GPU, where larger batches keep the device busy."""

RECHECK_KEEP_BYTES = 256 * 2 ** 20
"""A reduced-precision track's decoded chunks are kept until its result is final, so a float32 re-check needs no
second decode, when they take at most this many bytes (16 chunks of any shipped architecture fit); longer plans
(a sliding window over a long file) are read again instead."""


def _options_from(options: InferenceOptions | None, legacy: Mapping[str, object]) -> InferenceOptions:
    """``options``, or the options the deprecated keyword arguments describe (with a DeprecationWarning)."""
    if not legacy:
        return options or InferenceOptions()
    unknown = sorted(set(legacy) - LEGACY_KEYWORDS)
    if unknown:
        raise TypeError(f"Tagger() got unexpected keyword argument(s): {', '.join(unknown)}")
    if options is not None:
        raise TypeError("Tagger(): pass either an InferenceOptions or keyword arguments, not both")
    warnings.warn("Tagger(model, n_chunks=..., ...) keyword arguments are deprecated and will be removed in "
                  "focaltag 0.4; pass Tagger(model, InferenceOptions(...))", DeprecationWarning, stacklevel=3)
    kwargs: dict[str, Any] = dict(legacy)  # user values, checked by InferenceOptions
    if kwargs.pop("prefetch", True) is False:
        kwargs["workers"] = 0
    return InferenceOptions(**kwargs)  # validated as any options


class _Pending:
    """Accumulates one file's chunk probabilities until every chunk has been through every model."""

    def __init__(self, index: int, source: str, plan: ChunkPlan | None, n_tags: int,
                 wave: np.ndarray | None = None, embedding_size: int = 0) -> None:
        self.index, self.source, self.plan, self.wave = index, source, plan, wave
        self.chunks: dict[int, np.ndarray] | None = None  # kept for a float32 re-check (see Tagger._keeps_chunks)
        self.error: Exception | None = None
        self.rechecked = False
        n = plan.n_chunks if plan else 0
        self.probs = np.zeros((n, n_tags), dtype=np.float64)
        self.embeddings = np.zeros((n, embedding_size), dtype=np.float32) if embedding_size else None
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
        model: a catalogue name (a ``str``; pulled on first use), a path (checkpoint, run folder, ensemble folder,
            ``.onnx``), a loaded model, a list of them (averaged: mean of sigmoid probabilities; identical tag
            lists required), an already resolved model (:func:`focaltag.models.resolve.resolve_model`), or a
            loaded :class:`~focaltag.inference.predictor.Predictor` to share its networks. A spec is resolved
            exactly once, here.
        options: how the run behaves (:class:`~focaltag.inference.options.InferenceOptions`; default: its
            defaults). The keyword arguments of focaltag 0.2 (``n_chunks=``, ``precision=``...) still work, with a
            DeprecationWarning, for one release.

    Constructing a tagger changes nothing process-wide: call :func:`focaltag.configure_runtime` once for the
    thread budget and allocator settings the command line uses.
    """

    def __init__(self, model: ModelSpecs | ResolvedModel | Predictor, options: InferenceOptions | None = None,
                 **legacy: object) -> None:
        options = _options_from(options, legacy)
        if isinstance(model, Predictor):
            if model.load_key != options.load_key:
                raise ConfigError("Tagger: the predictor was loaded with another runtime, device, memory layout or "
                                "precision than these options ask for; load it with the same options")
            predictor = model
        else:
            from focaltag.inference.members import check_runtime

            check_runtime(options.runtime, options.device, options.precision)  # a bad --device before any load
            resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
            predictor = Predictor.load(resolved, options)
        if options.embeddings:
            predictor.check_embeddings()
        self.predictor = predictor
        self.options = options
        self.thresholds = resolve_thresholds(options.thresholds, predictor.tag_names, predictor.resolved.thresholds)
        self.n_rechecked = 0  # reduced-precision results recomputed in float32 so far (bench/tag.py reports it)
        self._rule = options.adaptive_rule

    # -- what the tagger runs --------------------------------------------------------------------------------
    @property
    def resolved(self) -> ResolvedModel:
        return self.predictor.resolved

    @property
    def members(self) -> tuple[Member, ...]:
        return self.predictor.members

    @property
    def weights(self) -> np.ndarray:
        return self.predictor.weights

    @property
    def member_precisions(self) -> tuple[str, ...]:
        return self.predictor.member_precisions

    @property
    def precision(self) -> str:
        """The members' precisions as one label (``"bf16"``, ``"fp32"``, ``"bf16+fp32"``): for logs and results."""
        return self.predictor.precision

    @property
    def reduced(self) -> bool:
        return self.predictor.reduced

    @property
    def model_name(self) -> str:
        return self.predictor.label

    @property
    def tag_names(self) -> tuple[str, ...]:
        return self.predictor.tag_names

    @property
    def sample_rate(self) -> int:
        return self.predictor.sample_rate

    @property
    def chunk_samples(self) -> int:
        return self.predictor.chunk_samples

    @property
    def embedding_size(self) -> int | None:
        """Length of the embeddings this tagger returns (None when a member cannot give embeddings)."""
        return self.predictor.embedding_size

    # -- the options, resolved -------------------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return self.options.n_chunks

    @property
    def hop_seconds(self) -> float | None:
        return self.options.hop_seconds

    @property
    def top_k(self) -> int:
        return self.options.top_k

    @property
    def read(self) -> ReadMethod:
        return self.options.read

    @property
    def adaptive(self) -> AdaptiveRule | None:
        return self._rule

    @property
    def batch_size(self) -> int:
        """Chunks per forward pass (:data:`CPU_BATCH_SIZE` on CPU, :data:`GPU_BATCH_SIZE` elsewhere by default)."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        return CPU_BATCH_SIZE if self.predictor.on_cpu else GPU_BATCH_SIZE

    @property
    def workers(self) -> int:
        """Decoding threads: as given, else the thread budget's on a CPU (:func:`focaltag._resources.thread_budget`)."""
        if self.options.workers is not None:
            return self.options.workers
        if self.predictor.on_cpu:
            from focaltag._resources import thread_budget
            from focaltag.inference.runtime import DEFAULT_DECODE_THREADS

            return thread_budget(DEFAULT_DECODE_THREADS)[0]
        return 2

    @property
    def recheck_margin(self) -> float:
        """The close-call margin: as given, else the largest the members' precision plans need."""
        margin = self.options.recheck_margin
        return self.predictor.recheck_margin if margin is None else float(margin)

    def with_options(self, **changes: object) -> Tagger:
        """A tagger on the same loaded networks with some options changed (``dataclasses.replace``)."""
        return Tagger(self.predictor, self.options.replace(**changes))

    # -- the network ---------------------------------------------------------------------------------------
    def predict_chunks(self, chunks: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Ensemble probabilities (n, n_tags) of waveform chunks (n, chunk_samples) at ``sample_rate``.

        ``precision="fp32"`` runs reduced-precision members in float32 for this call (the close-call re-check).
        """
        return self._predict(chunks, precision=precision)[0]

    def _predict(self, chunks: np.ndarray, *, precision: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != self.chunk_samples:
            raise DataError(f"chunks must have shape (n, {self.chunk_samples}), got {chunks.shape}")
        embeddings = self.options.embeddings
        out = np.zeros((len(chunks), len(self.tag_names)), dtype=np.float64)
        emb = np.zeros((len(chunks), self.embedding_size or 0), dtype=np.float32) if embeddings else None
        step = self.batch_size
        for lo in range(0, len(chunks), step):
            p, e = self.predictor.run(chunks[lo:lo + step], precision=precision, embeddings=embeddings)
            out[lo:lo + len(p)] = p
            if emb is not None and e is not None:
                emb[lo:lo + len(e)] = e
        return out, emb

    def _new_pending(self, index: int, source: str, plan: ChunkPlan | None, wave: np.ndarray | None = None
                     ) -> _Pending:
        size = (self.embedding_size or 0) if self.options.embeddings else 0
        return _Pending(index, source, plan, len(self.tag_names), wave, size)

    # -- close calls ---------------------------------------------------------------------------------------
    def _close_call(self, track: np.ndarray) -> bool:
        """True when reduced-precision rounding could change the top-k order or a decision of this track."""
        return self.reduced and close_call(track, margin=self.recheck_margin, top_k=self.top_k,
                                           thresholds=self.thresholds)

    def _keeps_chunks(self, plan: ChunkPlan) -> bool:
        """Whether a file's decoded chunks are kept for a possible float32 re-check (reduced, within the budget)."""
        return (self.reduced and self.recheck_margin > 0
                and plan.n_chunks * plan.chunk_samples * 4 <= RECHECK_KEEP_BYTES)

    def _recheck(self, item: _Pending) -> None:
        """Read ``item`` again and recompute its chunk probabilities (and embeddings) in float32."""
        plan = item.plan
        assert plan is not None
        try:
            rows = item.used if item.used is not None else list(range(plan.n_chunks))
            if item.chunks is not None and all(i in item.chunks for i in rows):
                pairs = iter(item.chunks.items())  # kept from the reduced-precision pass: no second decode
            elif item.wave is not None:
                pairs = cut_chunks(item.wave, plan.starts, plan.chunk_samples)
            else:
                pairs = iter_chunks(plan, method=self.options.read)
            chunks = dict(pairs)
            probs, emb = self._predict(np.stack([chunks[i] for i in rows]), precision="fp32")
            item.probs[rows] = probs
            if item.embeddings is not None and emb is not None:
                item.embeddings[rows] = emb
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
    def tag(self, path_or_waveform: AudioInput, sr: int | None = None) -> TagResult:
        """Tag one file (path) or waveform (1-D or (channels, samples) with its ``sr``); errors raise."""
        with contextlib.closing(self.tag_many([path_or_waveform], sr=sr)) as results:
            result = next(results)
        if isinstance(result, TagFailure):
            raise result.exception or AudioDecodeError(result.error)
        return result

    def tag_many(self, inputs: Iterable[AudioInput], *, sr: int | None = None
                 ) -> Generator[TagResult | TagFailure, None, None]:
        """Tag many files in input order; a file that fails becomes a ``TagFailure`` and the rest go on.

        ``workers`` threads decode the next files while the network runs; chunks of whichever files are ready
        share forward passes, so many short files go as fast as a few long ones and a slow file does not
        leave the network idle. Results still come out in input order.
        """
        by_index: dict[int, _Pending] = {}
        batch: list[tuple[_Pending, int, np.ndarray]] = []
        next_out = 0  # index of the next result to yield

        def run_batch() -> None:
            batch[:] = [b for b in batch if b[0].used is None]  # chunks of settled tracks are not needed
            if not batch:
                return
            probs, emb = self._predict(np.stack([c for _, _, c in batch]))
            for j, ((item, ci, chunk), p) in enumerate(zip(batch, probs, strict=True)):
                item.probs[ci] = p
                if item.embeddings is not None and emb is not None:
                    item.embeddings[ci] = emb[j]
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
                item = by_index[event.index] = self._new_pending(event.index, event.plan.source, event.plan,
                                                                 event.wave)
                if event.wave is None and self._keeps_chunks(event.plan):
                    item.chunks = {}
            elif isinstance(event, Failure):
                if event.index < next_out:  # settled and written already (adaptive): the rest was not needed
                    continue
                item = by_index.get(event.index) or by_index.setdefault(
                    event.index, self._new_pending(event.index, event.source, None))
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
        item = self._new_pending(0, plan.source, plan)
        item.remaining, item.produced = 0, True
        order = list(item.order) if self.adaptive is not None else list(range(plan.n_chunks))
        try:  # batch by batch in the rule's order, so adaptive chunking stops where tag_many would
            for lo in range(0, len(order), self.batch_size):
                rows = order[lo:lo + self.batch_size]
                probs, emb = self._predict(np.asarray(chunks)[rows])
                item.probs[rows] = probs
                if item.embeddings is not None and emb is not None:
                    item.embeddings[rows] = emb
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
            precision="fp32" if item.rechecked else self.precision, runtime=self.predictor.engine,
            model=self.model_name,
            chunks_used=len(rows), chunks_planned=plan.n_chunks,
            embedding=None if item.embeddings is None else item.embeddings[rows].mean(axis=0, dtype=np.float64)
            .astype(np.float32),
            embedding_model=self.model_name if item.embeddings is not None else "",
        )

