"""Inference precision: how a model runs in bf16 (and which inference precisions exist).

Whether a device runs bf16 fast, what ``auto`` resolves to and the autocast context are the one rule of
:mod:`focaltag.precision`, shared with training. This module adds what only inference needs: the
``--precision`` choices (:data:`TAG_PRECISIONS`), how each architecture's facts
(:class:`focaltag.models.facts.RuntimeFacts`) refine ``auto``, and the bf16
inference copy of a network (:func:`bf16_inference_model`: bf16 weights, channels_last, the
spectrogram-reading layers to float32 grade). The log-mel front end always runs in float32
(:class:`focaltag.audio.features.LogMelSpectrogram` disables autocast); measured speed and error are in
``bench/tag.py`` and the README.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from focaltag.errors import ConfigError
from focaltag.precision import (
    PRECISIONS,
    Precision,
    autocast,
    cpu_has_int8_dot,
    device_kind,
    resolve_precision,
    runs_bf16_fast,
)

__all__ = ["Precision", "PrecisionPlan", "TagPrecision", "TAG_PRECISIONS", "REDUCED_PRECISIONS", "is_reduced", "resolve_model_precision",
           "resolve_engine", "autocast", "fp32_modules", "keep_fp32", "bf16_inference_model"]

logger = logging.getLogger(__name__)

TagPrecision = Literal["auto", "bf16", "fp32", "int8"]
"""What ``Tagger(precision=...)`` accepts (the values of :data:`TAG_PRECISIONS`)."""

TAG_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "int8")
"""The ``--precision`` choices of ``tag``, ``predict`` and ``serve`` and what ``Tagger(precision=...)`` accepts:
the shared :data:`focaltag.precision.PRECISIONS`, plus ``int8`` (:mod:`focaltag.inference.int8`)."""

REDUCED_PRECISIONS: frozenset[str] = frozenset({"bf16", "int8"})
"""Resolved precisions that approximate float32: a track whose top tags or decisions hang on a gap smaller than
``Tagger.recheck_margin`` is recomputed in float32 when any member runs in one of these."""


def is_reduced(precision: str) -> bool:
    """Whether a member running in ``precision`` approximates float32 (its close calls are re-checked)."""
    return precision in REDUCED_PRECISIONS


@dataclass(frozen=True)
class PrecisionPlan:
    """How one member runs, decided once when it is loaded and reported in every result.

    Attributes:
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        engine: ``"torch"`` or ``"onnxruntime"``.
        fp32_modules: layers computed to float32 grade inside a bf16 network (the architecture's facts).
        recheck_margin: the probability gap under which this member's results are recomputed in float32 (0 for
            float32 members).
    """

    precision: str
    engine: str = "torch"
    fp32_modules: tuple[str, ...] = ()
    recheck_margin: float = 0.0


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve_model_precision(precision: str, device: Any, model: Any) -> str:
    """:func:`focaltag.precision.resolve_precision` for one model, with its architecture's
    :class:`~focaltag.models.facts.RuntimeFacts`: on a CPU ``auto`` keeps architectures whose bf16 does not pay off
    (``bf16_on_cpu``) float32, and runs int8 (``int8_auto``) on CPUs without native bf16 where onnxruntime is
    installed (``"bf16"``, ``"fp32"`` or ``"int8"``).

    ``int8`` asked for explicitly runs the architectures with an int8 recipe and keeps the others float32 (a
    warning names them); it needs a CPU device and onnxruntime (``pip install 'focaltag[onnx]'``).
    """
    from focaltag.models.facts import runtime_facts  # imports focaltag.models (torch): not at CLI start

    facts = runtime_facts(model)
    kind = device_kind(device)
    if precision == "int8":
        if kind != "cpu":
            raise ConfigError(f"precision int8 runs on the CPU, not {kind}; use --precision auto (or fp32)")
        if not facts.int8_recipe:
            logger.warning("precision int8: %s has no int8 recipe; it runs in float32",
                           str(getattr(model, "model_name", "")) or type(model).__name__)
            return "fp32"
        return "int8"
    resolved: str = resolve_precision(precision, device)
    if precision == "auto" and kind == "cpu":
        if resolved == "fp32" and facts.int8_auto and cpu_has_int8_dot() and _onnxruntime_available():
            return "int8"
        if resolved == "bf16" and not facts.bf16_on_cpu:
            return "fp32"
    return resolved


def resolve_engine(precision: str, resolved: str, device: Any, model: Any) -> str:
    """What runs a member that resolved to ``resolved``: ``"onnxruntime"`` for float32 under ``auto`` on a CPU
    without native bf16 where the architecture's facts say onnxruntime beats eager torch there
    (``onnx_fp32_without_bf16``) and the ONNX export is installed; else ``"torch"`` (int8 members are always
    onnxruntime's)."""
    if resolved == "int8":
        return "onnxruntime"
    from focaltag.models.facts import runtime_facts

    if (precision == "auto" and resolved == "fp32" and device_kind(device) == "cpu" and not runs_bf16_fast(device)
            and runtime_facts(model).onnx_fp32_without_bf16 and _onnx_export_available()):
        return "onnxruntime"
    return "torch"


def _onnx_export_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in ("onnxruntime", "onnx", "onnxscript"))


def fp32_modules(model: Any) -> tuple[str, ...]:
    """The architecture's ``RuntimeFacts.fp32_modules`` present in ``model`` (``()`` for architectures without)."""
    from focaltag.models.facts import runtime_facts

    if not hasattr(model, "get_submodule"):
        return ()
    present = []
    for name in runtime_facts(model).fp32_modules:
        try:
            model.get_submodule(name)
        except AttributeError:
            continue
        present.append(name)
    return tuple(present)


def keep_fp32(model: Any, names: Sequence[str]) -> list[Any]:
    """Run the submodules ``names`` of ``model`` in float32 even under bf16 autocast; returns the hook handles.

    A forward pre-hook turns autocast off and casts floating inputs to float32, a forward hook (called even when
    the forward raises) restores it, so the module computes exactly as without autocast. Outside autocast the
    hooks do nothing, so float32 runs stay bit-identical. ``handle.remove()`` undoes it.
    """
    import torch

    handles = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            raise ValueError(f"keep_fp32: {name!r} is a container that is never called; list its members")
        local = threading.local()  # autocast state is per thread, so is the stack of contexts

        def pre(mod: Any, args: tuple[Any, ...], local: Any = local) -> tuple[Any, ...] | None:
            stack = local.__dict__.setdefault("stack", [])
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            kind = first.device.type if first is not None else "cpu"
            if not torch.is_autocast_enabled(kind):
                stack.append(None)
                return None
            ctx = torch.autocast(kind, enabled=False)
            ctx.__enter__()
            stack.append(ctx)
            return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

        def post(mod: Any, args: tuple[Any, ...], output: Any, local: Any = local) -> None:
            stack = local.__dict__.get("stack")
            if stack:
                ctx = stack.pop()
                if ctx is not None:
                    ctx.__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


def _inside(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def bf16_inference_model(model: Any, fp32_names: Sequence[str] = ()) -> Any:
    """An inference copy of ``model`` laid out for fast bf16 autocast; ``model`` itself is not touched.

    Run it under bf16 autocast. Each choice was measured (README, "bf16 design" row):

    * convolution and linear weights stored in bf16, so autocast does not cast every weight again on every call
      (its cast cache only keeps tensors that require grad, and inference mode has none);
    * 4-D weights and activations channels_last, the layout oneDNN's bf16 convolutions run natively;
    * the convolution and linear layers inside ``fp32_names`` (the architecture's ``RuntimeFacts.fp32_modules``, which
      read the spectrogram) computed with float32-grade products in one compensated bf16 pass
      (:class:`focaltag.inference.compensated.CompensatedBf16`) instead of float32, which is slow inside a bf16
      model for a convolution with one input channel. ReLU and max-pooling after them are exact in bf16. Layers
      there that cannot be split (grouped convolutions, say) run in float32 through :func:`keep_fp32`.

    Not done: folding BatchNorm into the layer before it. It saved time but doubled bf16's probability error on
    all three trained Won et al. models; why was not established.

    The float32 original stays the reference: ``precision="fp32"`` calls and the close-call re-check run it.
    """
    import copy

    import torch
    from torch import nn

    from focaltag.inference.compensated import CompensatedBf16

    fast = copy.deepcopy(model).eval()
    for param in fast.parameters():
        param.requires_grad_(False)
    kept: list[str] = []
    for name, module in list(fast.named_modules()):
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        if not _inside(name, fp32_names):
            module.to(torch.bfloat16)
        elif CompensatedBf16.supports(module):
            parent, _, child = name.rpartition(".")
            setattr(fast.get_submodule(parent) if parent else fast, child, CompensatedBf16(module))
        else:
            kept.append(name)
    fast = fast.to(memory_format=torch.channels_last)
    keep_fp32(fast, kept)
    return fast
