"""How a tagging run behaves, in one frozen, validated object: :class:`InferenceOptions`.

Every entry point (``focaltag tag``, library runs, ``serve``, the beets plugin, Ray actors, ``predict``) builds
one from its own inputs, in one place, and passes it whole; a per-request variant is
``dataclasses.replace(options, top_k=3)``. Validation happens once, at construction, as scikit-learn validates
parameters once, so a bad value is one error line before any model is read.

The options split in two: what loading a model depends on (:attr:`InferenceOptions.load_key`: runtime, device,
memory layout, precision), which a :class:`~focaltag.inference.predictor.Predictor` is built for, and everything
else (chunking, batching, reading, top-k, thresholds, re-check, embeddings), which a tagger may change per call
around the same loaded predictor.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

from focaltag.errors import ConfigError
from focaltag.inference.adaptive import AdaptiveRule
from focaltag.inference.chunking import ReadMethod
from focaltag.inference.precision import TAG_PRECISIONS, TagPrecision

__all__ = ["InferenceOptions", "Thresholds", "Runtime", "Optimize", "thresholds_option", "resolve_thresholds",
           "LEGACY_KEYWORDS"]

Runtime = Literal["torch", "onnx"]
Optimize = Literal["none", "channels_last", "compile"]

Thresholds: TypeAlias = 'Literal["auto"] | float | Mapping[str, float] | str | os.PathLike[str] | None'
"""``"auto"`` (a catalogue model's own, else none), ``None`` (no decisions), one number for every tag, a
``{tag: threshold}`` mapping, or a file from ``focaltag evaluate --save-thresholds``."""

_READ_METHODS = ("auto", "seek", "stream", "whole")


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class InferenceOptions:
    """Everything that shapes a tagging run besides the model.

    Attributes:
        n_chunks: evenly spaced chunks per track, the positions evaluation uses (the adaptive maximum).
        adaptive: adaptive chunking (``focaltag tag --chunks auto``): visit the ``n_chunks`` positions in a
            low-discrepancy order and stop once more chunks cannot change the decisions or the ordered top-k
            (:mod:`focaltag.inference.adaptive`); an :class:`AdaptiveRule` sets the rule's constants.
        hop_seconds: a sliding window with this hop instead of ``n_chunks`` (not with ``adaptive``).
        batch_size: chunks per forward pass; ``None``: 4 on a CPU (a batch's activations stay in the last-level
            cache), 16 on a GPU.
        top_k: tags in each result's ``top``.
        thresholds: per-tag decision thresholds (see :data:`Thresholds`).
        precision: ``"auto"``, ``"bf16"``, ``"int8"`` or ``"fp32"``; each member's plan is decided from its
            architecture's :class:`~focaltag.models.facts.RuntimeFacts` when it is loaded.
        runtime: ``"torch"`` or ``"onnx"`` (onnxruntime float32).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"``).
        optimize: ``"none"``, ``"channels_last"`` or ``"compile"`` (``torch.compile``; a one-off compilation).
        read: how files are read: ``"auto"`` (seek where possible), ``"seek"``, ``"stream"`` or ``"whole"``.
        workers: decoding threads; ``0`` decodes in the calling thread; ``None``: the thread budget of
            :func:`focaltag._resources.thread_budget` on a CPU, 2 elsewhere.
        recheck_margin: with bf16 or int8 members, a track whose top-k order or a decision hangs on a gap smaller
            than this is recomputed in float32; ``None``: the largest margin the members' plans need; ``0``: off.
        embeddings: also return each track's embedding (the chunk-mean of the layer before the classifier).
    """

    n_chunks: int = 16
    adaptive: bool | AdaptiveRule = False
    hop_seconds: float | None = None
    batch_size: int | None = None
    top_k: int = 5
    thresholds: Thresholds = "auto"
    precision: TagPrecision = "auto"
    runtime: Runtime = "torch"
    device: str = "cpu"
    optimize: Optimize = "none"
    read: ReadMethod = "auto"
    workers: int | None = None
    recheck_margin: float | None = None
    embeddings: bool = False

    def __post_init__(self) -> None:
        if not _is_count(self.n_chunks, 1):
            raise ConfigError(f"n_chunks must be an integer >= 1, got {self.n_chunks!r}")
        if self.hop_seconds is not None and not self.hop_seconds > 0:
            raise ConfigError(f"hop_seconds must be > 0, got {self.hop_seconds}")
        if self.batch_size is not None and not _is_count(self.batch_size, 1):
            raise ConfigError(f"batch_size must be an integer >= 1 (or None for the default), got {self.batch_size!r}")
        if not _is_count(self.top_k, 0):
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.read not in _READ_METHODS:
            raise ConfigError(f"read must be one of {', '.join(_READ_METHODS)}, got {self.read!r}")
        if self.workers is not None and not _is_count(self.workers, 0):
            raise ConfigError(f"workers must be an integer >= 0 (decoding threads), got {self.workers!r}")
        if self.recheck_margin is not None and not 0 <= self.recheck_margin < 1:
            raise ConfigError(f"recheck_margin must be in [0, 1), got {self.recheck_margin}")
        if self.adaptive and self.hop_seconds is not None:
            raise ConfigError("adaptive chunking (--chunks auto) needs evenly spaced chunks, not a sliding window "
                              "(--hop); give --chunks N with --hop")
        if self.precision not in TAG_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(TAG_PRECISIONS)}, got {self.precision!r}")
        if self.runtime not in ("torch", "onnx"):
            raise ConfigError(f"runtime must be 'torch' or 'onnx', got {self.runtime!r}")
        if self.optimize not in ("none", "channels_last", "compile"):
            raise ConfigError(f"optimize must be 'none', 'channels_last' or 'compile', got {self.optimize!r}")
        if self.runtime == "onnx" and self.precision == "int8":
            raise ConfigError("precision int8 runs through onnxruntime already; drop --runtime onnx")
        if self.runtime == "onnx" and self.precision == "bf16":
            raise ConfigError("precision bf16 needs the torch runtime (onnxruntime runs float32); use --precision "
                              "auto or fp32 with --runtime onnx")
        if not isinstance(self.embeddings, bool):
            raise ConfigError(f"embeddings must be True or False, got {self.embeddings!r}")

    @property
    def load_key(self) -> tuple[str, str, str, str]:
        """What loading a model depends on: runtime, device, memory layout and precision."""
        return (self.runtime, self.device, self.optimize, self.precision)

    @property
    def adaptive_rule(self) -> AdaptiveRule | None:
        """The adaptive stopping rule, or None for the fixed protocol."""
        if isinstance(self.adaptive, AdaptiveRule):
            return self.adaptive
        return AdaptiveRule() if self.adaptive else None

    def replace(self, **changes: object) -> InferenceOptions:
        """A validated copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]  # each field is validated again


LEGACY_KEYWORDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(InferenceOptions)) | {"prefetch"}
"""The keyword arguments ``Tagger`` took before :class:`InferenceOptions` (deprecated; still accepted for one
release). ``prefetch=False`` is ``workers=0``."""


def thresholds_option(value: str | os.PathLike[str] | None) -> Thresholds:
    """A ``--thresholds`` value (CLI, serve, beets config): not given -> ``"auto"`` (a catalogue model's own
    thresholds, else none), ``none`` -> None (no decisions), anything else -> the thresholds file."""
    if value is None:
        return "auto"
    text = os.fspath(value)
    return None if text.lower() == "none" else text


def resolve_thresholds(thresholds: Thresholds, tag_names: Sequence[str],
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
