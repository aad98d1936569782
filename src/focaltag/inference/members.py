"""The networks a tagger runs: torch members (eval mode, optional channels_last / compile, a precision plan) and
onnxruntime members, loaded from a :class:`~focaltag.models.resolve.ResolvedModel` without resolving anything
again; each maps waveform chunks to probabilities and, when asked, embeddings.

Which files make up a model (catalogue names, ensemble folders) is :mod:`focaltag.models.resolve`'s job, the
ensemble folder format and the combination rule are :mod:`focaltag.models.ensemble`'s; this module only turns
resolved member sources into callables ``chunks -> sigmoid probabilities`` and checks they agree.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from focaltag.errors import CheckpointError, ConfigError, ModelError
from focaltag.inference.options import InferenceOptions, Optimize, Runtime
from focaltag.inference.precision import (
    PrecisionPlan,
    TagPrecision,
    autocast,
    bf16_inference_model,
    fp32_modules,
    resolve_engine,
    resolve_model_precision,
)
from focaltag.models.facts import embedding_size, logits_and_embedding, runtime_facts
from focaltag.models.meta import ModelMeta, check_same_input, model_meta
from focaltag.models.resolve import MemberSource, ResolvedModel

__all__ = ["Member", "TorchMember", "PrecisionPlan", "Runtime", "Optimize", "load_members", "check_members",
           "check_runtime"]

logger = logging.getLogger(__name__)


class Member(Protocol):
    """One network of an ensemble: waveform chunks at ``sample_rate`` -> sigmoid probabilities (and embeddings)."""

    name: str
    plan: PrecisionPlan
    tag_names: tuple[str, ...]
    sample_rate: int
    chunk_samples: int
    embedding_size: int | None  # None: this member cannot give embeddings (an ONNX file exported without them)

    def run(self, batch: np.ndarray, *, precision: str | None = None,
            embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]: ...


class TorchMember:
    """A torch model in eval mode, optionally channels_last and/or ``torch.compile``d, run in ``precision``.

    ``precision`` ``"auto"`` follows :func:`focaltag.inference.precision.resolve_model_precision` and the
    architecture's :class:`~focaltag.models.facts.RuntimeFacts`; ``self.plan`` is the decision. Under bf16 a copy
    made by :func:`focaltag.inference.precision.bf16_inference_model` runs under autocast (bf16 weights,
    channels_last, the architecture's spectrogram-reading layers computed to float32 grade; not with
    ``optimize="compile"``); float32 calls run ``model`` untouched.
    """

    def __init__(self, model: Any, *, name: str = "model", device: str = "cpu", optimize: Optimize = "none",
                 precision: TagPrecision = "auto") -> None:
        import torch

        meta = model_meta(model)
        self.name = name
        resolved = resolve_model_precision(precision, device, model)
        run_precision = "fp32" if resolved == "int8" else resolved  # int8 members are Int8Member (_load)
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if optimize not in ("none", "channels_last", "compile"):
            raise ConfigError(f"optimize must be 'none', 'channels_last' or 'compile', got {optimize!r}")
        if optimize in ("channels_last", "compile"):
            self.model = self.model.to(memory_format=torch.channels_last)
        bf16_copy = run_precision == "bf16" and optimize != "compile"
        self.plan = PrecisionPlan(run_precision, "torch", fp32_modules(self.model) if bf16_copy else (),
                                  runtime_facts(model).recheck_margin(run_precision))
        self.embedding_size: int | None = _embedding_size_or_none(model)
        # bf16 runs a bf16-weight, channels_last copy whose spectrogram-reading layers are float32-grade;
        # ``self.model`` stays the untouched float32 reference (``precision="fp32"`` calls, close-call re-checks)
        self._bf16_model = bf16_inference_model(self.model, self.plan.fp32_modules) if bf16_copy else None
        self._fn = torch.compile(self.model, dynamic=False) if optimize == "compile" else self.model
        # a compiled graph is specialised to one batch size: later batches are padded to the first one's size
        self._fixed_batch: int | None = None if optimize == "compile" else 0

    @property
    def precision(self) -> str:
        return self.plan.precision

    def run(self, batch: np.ndarray, *, precision: str | None = None,
            embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Sigmoid probabilities of a batch, and its embeddings when asked; ``precision`` overrides the plan's
        precision for this call (the float32 re-check)."""
        import torch

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = len(batch)
        if self._fixed_batch is None:
            self._fixed_batch = n
        if self._fixed_batch and n != self._fixed_batch:
            if n > self._fixed_batch:
                parts = [self.run(batch[i:i + self._fixed_batch], precision=precision, embeddings=embeddings)
                         for i in range(0, n, self._fixed_batch)]
                return (np.concatenate([p for p, _ in parts]),
                        np.concatenate([e for _, e in parts if e is not None]) if embeddings else None)
            batch = np.concatenate([batch, np.zeros((self._fixed_batch - n, batch.shape[1]), dtype=np.float32)])
        with torch.inference_mode(), warnings.catch_warnings():
            # inductor notes once that the STFT's complex ops stay in eager mode; nothing for the user to do
            warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
            x = torch.from_numpy(batch).to(self.device)
            run = precision or self.plan.precision
            bf16 = self._bf16_model if run == "bf16" else None
            with autocast(self.device, run):
                if embeddings:  # the same operations split at the classifier (not through torch.compile)
                    logits, embedding = logits_and_embedding(bf16 if bf16 is not None else self.model, x)
                else:
                    logits, embedding = (bf16 if bf16 is not None else self._fn)(x), None
            probabilities = torch.sigmoid(logits.float()).cpu().numpy()[:n]
            return probabilities, None if embedding is None else embedding.float().cpu().numpy()[:n]

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Sigmoid probabilities of a batch (see :meth:`run`)."""
        return self.run(batch, precision=precision)[0]


def _embedding_size_or_none(model: Any) -> int | None:
    try:
        return embedding_size(model)
    except ModelError:
        return None


def check_members(members: Sequence[Member]) -> None:
    """Raise ModelError unless all members share tag list, sample rate and chunk length."""
    check_same_input([ModelMeta(m.tag_names, m.sample_rate, m.chunk_samples) for m in members],
                     [m.name for m in members])


def _load(source: MemberSource, *, runtime: Runtime, device: str, optimize: Optimize,
          precision: TagPrecision) -> Member:
    from focaltag.audio.backends import FFMPEG_EXTENSIONS

    path = source.path
    if path is not None and path.suffix.lower() in FFMPEG_EXTENSIONS:
        raise CheckpointError(f"{path} is an audio file, not a model; pass a checkpoint (.pt), a run folder, an "
                              "ensemble folder or an .onnx file as the model")
    is_onnx = path is not None and path.suffix.lower() == ".onnx"
    if runtime == "onnx":
        from focaltag.inference.onnx_model import OnnxMember

        if path is None:
            return OnnxMember.from_torch(source.model, name=source.name)
        return OnnxMember.from_file(path) if is_onnx else OnnxMember.from_checkpoint(path)
    if is_onnx:
        raise ConfigError(f"{path} is an ONNX model; tag it with runtime='onnx' (--runtime onnx)")
    if path is None and (callable(getattr(source.model, "run", None)) or not hasattr(source.model, "state_dict")):
        member: Member = source.model  # already a member (an OnnxMember, say)
        return member
    model = source.load()
    resolved = resolve_model_precision(precision, device, model)
    if resolved == "int8":
        from focaltag.inference.int8 import Int8Member

        return Int8Member(model, name=source.name)
    if resolve_engine(precision, resolved, device, model) == "onnxruntime":
        from focaltag.inference.onnx_model import OnnxMember

        return OnnxMember.from_model(model, name=source.name)
    return TorchMember(model, name=source.name, device=device, optimize=optimize, precision=precision)


def check_runtime(runtime: Runtime, device: str, precision: TagPrecision) -> str:
    """The device to use, checked before any model is read, so a bad ``--device`` (``gpu``, cuda on a CPU-only
    machine) or a bad ``FOCALTAG_CPU_BF16`` is one line, not a failure after loading. The runtime and precision
    names and their combinations are :class:`~focaltag.inference.options.InferenceOptions`' to validate."""
    InferenceOptions(runtime=runtime, device=device, precision=precision)  # validates the names
    if runtime != "torch":
        return device
    from focaltag.devices import resolve_device
    from focaltag.precision import runs_bf16_fast

    resolved = resolve_device(device)
    if precision in ("auto", "bf16"):
        runs_bf16_fast(resolved)  # reads the CPU rule (and its override) now
    return resolved


def load_members(resolved: ResolvedModel, *, runtime: Runtime = "torch", device: str = "cpu",
                 optimize: Optimize = "none", precision: TagPrecision = "auto") -> list[Member]:
    """Load the members of a resolved model (in its member order, matching ``resolved.weights``).

    Torch members run in ``precision`` (see :class:`TorchMember`); onnxruntime members always in float32.
    """
    device = check_runtime(runtime, device, precision)
    members = [_load(s, runtime=runtime, device=device, optimize=optimize, precision=precision)
               for s in resolved.members]
    check_members(members)
    return members
