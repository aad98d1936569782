"""Inference precision: bf16 autocast where the hardware runs it natively, float32 elsewhere.

On CPUs with AMX or AVX512-BF16 a paper-size forward in bf16 is ~3x faster than float32 with probabilities within
~1e-4 (``bench/tag.py``); without those instructions bf16 is emulated and slower, so ``auto`` keeps float32.
On CUDA, ``auto`` uses bf16 where the GPU supports it. The log-mel front end always runs in float32
(:class:`focaltag.audio.features.LogMelSpectrogram` disables autocast), only the network after it runs in bf16.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from focaltag.errors import ConfigError

__all__ = ["Precision", "PRECISIONS", "cpu_has_fast_bf16", "resolve_precision", "autocast", "FP32_MODULES",
           "fp32_modules", "keep_fp32"]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
_FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16).

    Read from the kernel's CPU flags: torch's own check (``mkldnn._is_mkldnn_bf16_supported``) is also true
    on plain AVX512 CPUs, where bf16 is emulated and slower than float32. Without ``/proc/cpuinfo`` (macOS,
    Windows) the answer is False, so ``auto`` stays float32.
    """
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_cpu_flags(text) & set(_FAST_BF16_FLAGS))


def _cuda_bf16(device: Any) -> bool:
    import torch

    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def resolve_precision(precision: str, device: Any = "cpu") -> Literal["bf16", "fp32"]:
    """``"auto"``, ``"bf16"`` or ``"fp32"`` -> the precision a model on ``device`` actually runs in.

    ``auto``: bf16 on CPUs with AMX / AVX512-BF16 and on CUDA GPUs that support it, else fp32. ``bf16`` asked
    for explicitly runs on any CPU (emulated, slower, with a warning) and on bf16-capable CUDA GPUs.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    kind = str(getattr(device, "type", device)).split(":")[0]
    if kind == "cpu":
        fast = cpu_has_fast_bf16()
        if precision == "bf16" and not fast:
            logger.warning("precision bf16: this CPU has no AMX / AVX512-BF16 instructions, so bf16 is emulated "
                           "and slower than fp32")
        return "bf16" if fast or precision == "bf16" else "fp32"
    if kind == "cuda":
        if _cuda_bf16(device):
            return "bf16"
        if precision == "bf16":
            raise ConfigError("precision bf16: this GPU does not support bf16; use --precision fp32 (or auto)")
        return "fp32"
    if precision == "bf16":
        raise ConfigError(f"precision bf16 runs on cpu or cuda devices, not {kind}; use --precision fp32 (or auto)")
    return "fp32"


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"`` on ``device``, else a no-op context."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    kind = str(getattr(device, "type", device)).split(":")[0]
    return torch.autocast(kind, dtype=torch.bfloat16)


FP32_MODULES: dict[str, tuple[str, ...]] = {
    "short_chunk_resnet": ("blocks.0.conv1", "blocks.0.downsample.0"),
    "fcn": ("layer1",),
    "crnn": ("layer1",),
    "musicnn": (),
}
"""Submodules that stay float32 under bf16 autocast, per architecture (``model_name``): the layers that read the
log-mel spectrogram. Rounding the spectrogram itself to bf16 (8 significant bits) is most of bf16's error: on the
six shared recordings (16 chunks per track) keeping them float32 cut the largest track-level probability change
of Won et al.'s FCN from 2.1e-3 to 1.3e-3 and of CRNN from 6.2e-3 to 1.5e-3 (the final dense layers or CRNN's GRU
in float32 changed little: 2.3e-3 and 5.8e-3). The price is speed: that full-resolution block in float32 took
FCN's bf16 forward from 1.6x to 1.3x float32 and CRNN's from 1.4-1.7x to 1.2-1.3x (2 cores, no AMX); the ResNet's
first convolutions cost nothing measurable. Musicnn stays all bf16: its error is already 6e-4,
and its spectrogram-reading branches are most of its compute."""


def fp32_modules(model: Any) -> tuple[str, ...]:
    """The names in :data:`FP32_MODULES` for ``model``'s architecture (``()`` for architectures not listed)."""
    names = FP32_MODULES.get(str(getattr(model, "model_name", "")), ())
    if not hasattr(model, "get_submodule"):
        return ()
    present = []
    for name in names:
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
