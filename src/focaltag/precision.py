"""The one precision rule: which devices run bf16 fast, what a requested precision resolves to, and autocast.

Training (``runtime.precision``) and inference (``--precision``, ``Tagger(precision=...)``) both ask this
module. On CPUs, bf16 is native only with AMX-BF16 or AVX512-BF16; elsewhere it is emulated and slower than
float32, so ``auto`` stays float32 there. AVX512-BF16 alone is not enough either: on an Intel Xeon with it and
without AMX, bf16 convolutions ran at 0.64x float32's, so there ``auto`` counts bf16 as fast only where a short
measurement on this CPU says so (:func:`cpu_has_fast_bf16`). On CUDA it follows ``torch.cuda.is_bf16_supported()``.

The precisions a user can ask for are :data:`PRECISIONS`; what a model then runs in is a
:data:`RunPrecision`. Inference-only precisions (see :data:`focaltag.inference.precision.TAG_PRECISIONS`)
extend these there, so training configs never see them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

from focaltag.errors import ConfigError

__all__ = ["Precision", "RunPrecision", "PRECISIONS", "CPU_BF16_ENV", "CPU_VNNI_ENV", "BF16_MIN_SPEEDUP",
           "bf16_measured_fast", "measure_bf16_speedup", "cpu_has_bf16_instructions", "cpu_has_fast_bf16",
           "cpu_has_int8_dot", "cuda_has_bf16",
           "runs_bf16_fast", "device_kind", "resolve_precision", "autocast"]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp32"]
RunPrecision = Literal["bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
"""What training configs and the inference options accept (inference adds its own in TAG_PRECISIONS)."""


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
def _cpuinfo_text(cpuinfo_path: str) -> str:
    try:
        return Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model_name(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


BF16_MIN_SPEEDUP = 1.1
"""How much faster than float32 a bf16 convolution must measure on a CPU with AVX512-BF16 and no AMX for ``auto``
to pick bf16 there (an Intel Xeon without AMX measured 0.64x, so bf16 would only cost it time)."""


def measure_bf16_speedup(repeats: int = 3) -> float:
    """float32 time / bf16 time of one 3x3 convolution shaped like a paper ResNet layer (4 chunks, 128 channels,
    64 x 64), on one torch thread, best of ``repeats`` interleaved runs each; about half a second."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        conv = torch.nn.Conv2d(128, 128, 3, padding=1).eval()
        x = torch.randn(4, 128, 64, 64)

        def fp32() -> None:
            with torch.inference_mode():
                conv(x)

        def bf16() -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                conv(x)

        best = {"fp32": float("inf"), "bf16": float("inf")}
        fp32()  # first calls: oneDNN's kernels and weight reorders
        bf16()
        for _ in range(repeats):
            for name, run in (("fp32", fp32), ("bf16", bf16)):
                started = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return best["fp32"] / best["bf16"]


def _probe_file() -> Path:
    from focaltag._cache import cache_root

    return cache_root() / "cpu" / "bf16-speedup.json"


def _probe_key(cpuinfo: str) -> str:
    import torch

    text = f"{_cpu_model_name(cpuinfo)}|{' '.join(sorted(_cpu_flags(cpuinfo)))}|{torch.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def bf16_measured_fast(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 convolutions run at least :data:`BF16_MIN_SPEEDUP` times float32's on this CPU: measured
    once (:func:`measure_bf16_speedup`) and kept in the cache folder per CPU model, flags and torch version, so
    later processes read the answer instead of measuring again."""
    cpuinfo = _cpuinfo_text(cpuinfo_path)
    key, path = _probe_key(cpuinfo), _probe_file()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    entry = known.get(key) if isinstance(known, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("speedup"), (int, float)):
        entry = {"cpu": _cpu_model_name(cpuinfo), "speedup": round(measure_bf16_speedup(), 3)}
        known = {**(known if isinstance(known, dict) else {}), key: entry}
        with contextlib.suppress(OSError):  # a read-only cache: measured again next time, nothing else lost
            from focaltag._io import write_json

            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, known)
        logger.info("bf16 on this CPU (%s): %.2fx float32 in a convolution; --precision auto uses %s",
                    entry["cpu"] or "unknown model", entry["speedup"],
                    "bf16" if entry["speedup"] >= BF16_MIN_SPEEDUP else "the no-bf16 path")
    return float(entry["speedup"]) >= BF16_MIN_SPEEDUP


def cpu_has_bf16_instructions(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags list native bf16 instructions (AMX-BF16 or AVX512-BF16), fast or not: what a
    benchmark needs to show bf16's speed beside float32's; ``auto`` asks :func:`cpu_has_fast_bf16` instead."""
    return bool(_cpu_flags(_cpuinfo_text(cpuinfo_path)) & {"amx_bf16", "avx512_bf16"})


def _cpuinfo_has_fast_bf16(cpuinfo_path: str) -> bool:
    """AMX-BF16 in the flags: fast. AVX512-BF16 without AMX: fast where measured so (:func:`bf16_measured_fast`).
    Neither: emulated, slow."""
    flags = _cpu_flags(_cpuinfo_text(cpuinfo_path))
    if "amx_bf16" in flags:
        return True
    return "avx512_bf16" in flags and bf16_measured_fast(cpuinfo_path)


def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU runs bf16 matrix work faster than float32: with AMX-BF16, or with AVX512-BF16 where it
    measured at least :data:`BF16_MIN_SPEEDUP` times float32 on this CPU (:func:`bf16_measured_fast`: once per
    CPU model and torch version, cached).

    Read from the kernel's CPU flags: torch's own check (``mkldnn._is_mkldnn_bf16_supported``) is also true
    on plain AVX512 CPUs, where bf16 is emulated and slower than float32. Without ``/proc/cpuinfo`` (macOS,
    Windows) the answer is False, so ``auto`` stays float32. :data:`CPU_BF16_ENV` (``0`` or ``1``), when set,
    is the answer instead of the flags and of any measurement.
    """
    override = _cpu_bf16_override()
    if override is not None:
        return override
    return _cpuinfo_has_fast_bf16(cpuinfo_path)


CPU_VNNI_ENV = "FOCALTAG_CPU_VNNI"
"""Environment variable that overrides the CPU flags for int8 dot products: ``1`` treats the CPU as having them
(AVX512-VNNI, AVX-VNNI or AMX-INT8), ``0`` as not. For tests, which run every branch of ``auto`` on any machine."""

_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo_has_int8_dot(cpuinfo_path: str) -> bool:
    return bool(_cpu_flags(_cpuinfo_text(cpuinfo_path)) & set(_INT8_DOT_FLAGS))


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
        logger.warning("precision bf16: this CPU has no AMX, and no AVX512-BF16 that measured faster than fp32, "
                       "so bf16 is slower than fp32 here")
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
