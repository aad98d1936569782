"""The networks a tagger runs: torch members (eval mode, optional channels_last / compile, a precision) and
onnxruntime members, loaded from a :class:`~focaltag.models.resolve.ResolvedModel`.

Which files make up a model (catalogue names, ensemble folders) is :mod:`focaltag.models.resolve`'s job, the
ensemble folder format and the combination rule are :mod:`focaltag.models.ensemble`'s; this module only turns
resolved member sources into callables ``chunks -> sigmoid probabilities`` and checks they agree.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from focaltag.errors import CheckpointError, ConfigError
from focaltag.inference.precision import (
    TagPrecision,
    autocast,
    bf16_inference_model,
    fp32_modules,
    resolve_model_precision,
)
from focaltag.models.meta import ModelMeta, check_same_input, model_meta
from focaltag.models.resolve import MemberSource, ResolvedModel

__all__ = ["Member", "TorchMember", "Runtime", "Optimize", "load_members", "check_members", "check_runtime"]

logger = logging.getLogger(__name__)

Runtime = Literal["torch", "onnx"]
Optimize = Literal["none", "channels_last", "compile"]


class Member(Protocol):
    """One network of an ensemble: waveform chunks at ``sample_rate`` -> sigmoid probabilities."""

    name: str
    precision: str  # the resolved precision it runs in ("fp32", "bf16", ...)
    tag_names: tuple[str, ...]
    sample_rate: int
    chunk_samples: int

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray: ...


class TorchMember:
    """A torch model in eval mode, optionally channels_last and/or ``torch.compile``d, run in ``precision``.

    ``precision`` ``"auto"`` is bf16 on CPUs with AMX / AVX512-BF16 and on bf16 GPUs, else float32
    (:func:`focaltag.inference.precision.resolve_model_precision`: Musicnn stays float32 on CPUs, where bf16 did
    not pay off); ``self.precision`` is the resolved one. Under bf16 a copy made by
    :func:`focaltag.inference.precision.bf16_inference_model` runs under autocast (bf16 weights, channels_last,
    the architecture's ``precision.FP32_MODULES``, the layers that read the spectrogram, computed to float32
    grade; ``self.fp32_modules``; not with ``optimize="compile"``); float32 calls run ``model`` untouched.
    """

    def __init__(self, model: Any, *, name: str = "model", device: str = "cpu", optimize: Optimize = "none",
                 precision: TagPrecision = "auto") -> None:
        import torch

        meta = model_meta(model)
        self.name = name
        resolved = resolve_model_precision(precision, device, model)
        self.precision: str = "fp32" if resolved == "int8" else resolved  # int8 members are Int8Member (_load)
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if optimize not in ("none", "channels_last", "compile"):
            raise ConfigError(f"optimize must be 'none', 'channels_last' or 'compile', got {optimize!r}")
        if optimize in ("channels_last", "compile"):
            self.model = self.model.to(memory_format=torch.channels_last)
        # bf16 runs a bf16-weight, channels_last copy whose spectrogram-reading layers are float32-grade;
        # ``self.model`` stays the untouched float32 reference (``precision="fp32"`` calls, close-call re-checks)
        self.fp32_modules = fp32_modules(self.model) if self.precision == "bf16" and optimize != "compile" else ()
        self._bf16_model = (bf16_inference_model(self.model, self.fp32_modules)
                            if self.precision == "bf16" and optimize != "compile" else None)
        self._fn = torch.compile(self.model, dynamic=False) if optimize == "compile" else self.model
        # a compiled graph is specialised to one batch size: later batches are padded to the first one's size
        self._fixed_batch: int | None = None if optimize == "compile" else 0

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Sigmoid probabilities of a batch; ``precision`` overrides ``self.precision`` for this call."""
        import torch

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = len(batch)
        if self._fixed_batch is None:
            self._fixed_batch = n
        if self._fixed_batch and n != self._fixed_batch:
            if n > self._fixed_batch:
                return np.concatenate([self(batch[i:i + self._fixed_batch], precision=precision)
                                       for i in range(0, n, self._fixed_batch)])
            batch = np.concatenate([batch, np.zeros((self._fixed_batch - n, batch.shape[1]), dtype=np.float32)])
        with torch.inference_mode(), warnings.catch_warnings():
            # inductor notes once that the STFT's complex ops stay in eager mode; nothing for the user to do
            warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
            x = torch.from_numpy(batch).to(self.device)
            run = precision or self.precision
            fn = self._bf16_model if run == "bf16" and self._bf16_model is not None else self._fn
            with autocast(self.device, run):
                logits = fn(x)
            return torch.sigmoid(logits.float()).cpu().numpy()[:n]


def check_members(members: Sequence[Member]) -> None:
    """Raise ModelError unless all members share tag list, sample rate and chunk length."""
    check_same_input([ModelMeta(m.tag_names, m.sample_rate, m.chunk_samples) for m in members],
                     [m.name for m in members])


def _load(source: MemberSource, *, runtime: Runtime, device: str, optimize: Optimize,
          precision: TagPrecision) -> Member:
    from focaltag.audio.backends import FFMPEG_EXTENSIONS as AUDIO_EXTENSIONS

    path = source.path
    if path is not None and path.suffix.lower() in AUDIO_EXTENSIONS:
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
    if path is None:
        if callable(getattr(source.model, "run", None)) or not hasattr(source.model, "state_dict"):
            return source.model  # already a member (an OnnxMember, say)
        model = source.model
    else:
        from focaltag.models import load_model

        model = load_model(path)
    if resolve_model_precision(precision, device, model) == "int8":
        from focaltag.inference.int8 import Int8Member

        return Int8Member(model, name=source.name)
    return TorchMember(model, name=source.name, device=device, optimize=optimize, precision=precision)


def check_runtime(runtime: str, device: str, precision: str) -> str:
    """Check the runtime options before any model is read; returns the torch device to use."""
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if runtime == "onnx" and precision == "int8":
        raise ConfigError("precision int8 runs through onnxruntime already; drop --runtime onnx")
    if runtime == "onnx" and precision == "bf16":
        raise ConfigError("precision bf16 needs the torch runtime (onnxruntime runs float32); use --precision auto "
                          "or fp32 with --runtime onnx")
    if runtime == "torch":
        from focaltag.devices import resolve_device

        return resolve_device(device)  # one line for 'gpu', or cuda on a CPU-only machine
    return device


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
