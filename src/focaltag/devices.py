"""Torch device names checked up front, so ``--device gpu`` or ``cuda`` on a CPU-only machine is one line.

torch itself answers a bad name with a RuntimeError deep inside model loading, and an unavailable CUDA device
with an AssertionError from its lazy initialisation; both would reach the user as tracebacks.
"""

from __future__ import annotations

import re

from focaltag.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "check_device_name", "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str, *, option: str = "--device") -> str:
    """Validate the spelling only (no torch import): ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        hint = " (did you mean cuda?)" if text.startswith("gpu") else ""
        raise ConfigError(f"{option} {name!r} is not a device{hint}; use {DEVICE_CHOICES}")
    return text


def resolve_device(name: str, *, option: str = "--device", local_rank: int = 0) -> str:
    """A device name torch can use on this machine: ``auto`` -> ``cuda`` when available, else ``cpu``.

    ``cuda`` becomes ``cuda:<local_rank % n_gpus>`` (one GPU per torchrun process). Raises ConfigError naming
    the option when the device does not exist here.
    """
    text = check_device_name(name, option=option)
    import torch

    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError(f"{option} {name!r}: CUDA is not available ({why}); use {option} cpu")
        count = torch.cuda.device_count()
        if text == "cuda":
            return f"cuda:{local_rank % max(count, 1)}"
        index = int(text.split(":")[1])
        if index >= count:
            raise ConfigError(f"{option} {name!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}); "
                              f"pick one of those")
    elif text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{option} {name!r}: Apple MPS is not available here; use {option} cpu")
    return text
