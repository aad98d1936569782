"""The one precision rule: which devices run bf16 fast, what a requested precision resolves to, and autocast.

Training (``runtime.precision``) and inference (``--precision``, ``Tagger(precision=...)``) both ask this
module. On CPUs, bf16 is native only with AMX-BF16 or AVX512-BF16; elsewhere it is emulated and slower than
float32, so ``auto`` stays float32 there. On CUDA it follows ``torch.cuda.is_bf16_supported()``.

The precisions a user can ask for are :data:`PRECISIONS`; what a model then runs in is a
:data:`RunPrecision`. Inference-only precisions (see :data:`focaltag.inference.precision.TAG_PRECISIONS`)
extend these there, so training configs never see them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any, Literal

from focaltag.errors import ConfigError

__all__ = ["Precision", "RunPrecision", "PRECISIONS", "CPU_BF16_ENV", "CPU_VNNI_ENV", "cpu_has_fast_bf16",
           "cpu_has_int8_dot", "cuda_has_bf16",
           "runs_bf16_fast", "device_kind", "resolve_precision", "autocast"]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp32"]
RunPrecision = Literal["bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
"""What training configs and the inference options accept (inference adds its own in TAG_PRECISIONS)."""

_FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


CPU_BF16_ENV = "FOCALTAG_CPU_BF16"
"""Environment variable that overrides the CPU flags: ``1`` treats the CPU as running bf16 natively, ``0`` as not
(``auto`` then takes the no-bf16 branch: int8 where it has a recipe, else float32). For virtual machines whose
reported flags do not match the host, and for tests, which run both branches on any machine."""


def _cpu_bf16_override() -> bool | None:
    """:data:`CPU_BF16_ENV` as a bool, ``None`` when unset or empty; read on every call, so it can be flipped."""
    value = os.environ.get(CPU_BF16_ENV, "").strip()
    if not value:
        return None
    if value not in ("0", "1"):
        raise ConfigError(f"{CPU_BF16_ENV} must be 1 (the CPU runs bf16 fast) or 0 (it does not), got {value!r}; "
                          "unset it to read the CPU's own flags")
    return value == "1"


@functools.lru_cache(maxsize=4)
def _cpuinfo_has_fast_bf16(cpuinfo_path: str) -> bool:
    """Whether the CPU flags in ``cpuinfo_path`` include a native bf16 instruction set (read once per path)."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_cpu_flags(text) & set(_FAST_BF16_FLAGS))


def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16).

    Read from the kernel's CPU flags: torch's own check (``mkldnn._is_mkldnn_bf16_supported``) is also true
    on plain AVX512 CPUs, where bf16 is emulated and slower than float32. Without ``/proc/cpuinfo`` (macOS,
    Windows) the answer is False, so ``auto`` stays float32. :data:`CPU_BF16_ENV` (``0`` or ``1``), when set,
    is the answer instead of the flags.
    """
    override = _cpu_bf16_override()
    if override is not None:
        return override
    return _cpuinfo_has_fast_bf16(cpuinfo_path)


CPU_VNNI_ENV = "FOCALTAG_CPU_VNNI"
"""Environment variable that overrides the CPU flags for int8 dot products: ``1`` treats the CPU as having them
(AVX512-VNNI, AVX-VNNI or AMX-INT8), ``0`` as not. For tests, which run every branch of ``auto`` on any machine."""

_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=4)
def _cpuinfo_has_int8_dot(cpuinfo_path: str) -> bool:
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_cpu_flags(text) & set(_INT8_DOT_FLAGS))


def cpu_has_int8_dot(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has int8 dot-product instructions (VNNI or AMX-INT8), where onnxruntime's int8 kernels
    are fast. Without them (AVX2-only CPUs) int8 measured no faster than float32 as a whole process
    (``../shared/notes/cpu-without-bf16.md``). :data:`CPU_VNNI_ENV`, when set, is the answer instead."""
    value = os.environ.get(CPU_VNNI_ENV, "").strip()
    if value:
        if value not in ("0", "1"):
            raise ConfigError(f"{CPU_VNNI_ENV} must be 1 (the CPU has VNNI int8 dot products) or 0 (it does not), "
                              f"got {value!r}; unset it to read the CPU's own flags")
        return value == "1"
    return _cpuinfo_has_int8_dot(cpuinfo_path)


def cuda_has_bf16() -> bool:
    """True when a CUDA GPU is visible and supports bf16."""
    import torch

    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def device_kind(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ``"mps"``... of a torch device or device name."""
    return str(getattr(device, "type", device)).split(":")[0]


def runs_bf16_fast(device: Any) -> bool:
    """The one rule: does ``device`` run bf16 natively (faster than float32)?"""
    kind = device_kind(device)
    if kind == "cpu":
        return cpu_has_fast_bf16()
    if kind == "cuda":
        return cuda_has_bf16()
    return False


def resolve_precision(precision: str, device: Any = "cpu") -> RunPrecision:
    """``"auto"``, ``"bf16"`` or ``"fp32"`` -> the precision a model on ``device`` actually runs in.

    ``auto``: bf16 where :func:`runs_bf16_fast`, else fp32. ``bf16`` asked for explicitly runs on any CPU
    (emulated, slower, with a warning) and on bf16-capable CUDA GPUs.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    kind = device_kind(device)
    fast = runs_bf16_fast(device)
    if fast:
        return "bf16"
    if precision == "auto":
        return "fp32"
    if kind == "cpu":
        logger.warning("precision bf16: this CPU has no AMX / AVX512-BF16 instructions, so bf16 is emulated "
                       "and slower than fp32")
        return "bf16"
    if kind == "cuda":
        raise ConfigError("precision bf16: this GPU does not support bf16; use --precision fp32 (or auto)")
    raise ConfigError(f"precision bf16 runs on cpu or cuda devices, not {kind}; use --precision fp32 (or auto)")


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"`` on ``device``, else a no-op context (training and inference)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_kind(device), dtype=torch.bfloat16)
