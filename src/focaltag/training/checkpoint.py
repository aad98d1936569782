"""Training checkpoints in the focaltag format: atomic saves, weights-only loads, RNG capture and restore.

A checkpoint is a dict with ``"focaltag_checkpoint": CHECKPOINT_VERSION``, ``"model_name"``, ``"model_args"`` (kwargs for
``create_model``), ``"tag_names"`` and ``"state_dict"`` (what ``focaltag.models.load_model`` needs), plus,
from training, ``"config"``, ``"epoch"``, ``"step"``, ``"best"`` and, in ``last.pt`` only, ``"training"``
(optimizer, schedule phase, sampler position, RNG states, metric history). Everything in it is plain
tensors / numbers / strings so ``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from focaltag._io import save_torch
from focaltag._version import __version__
from focaltag.errors import CheckpointError
from focaltag.models import model_checkpoint, unwrap_model
from focaltag.models._checkpoint import CHECKPOINT_VERSION, checkpoint_version, read_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "unwrap_model",
    "build_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = CHECKPOINT_VERSION  # the models' format: one version field for every reader


def build_checkpoint(model: torch.nn.Module, *, config: dict[str, Any] | None = None,
                     **extra: Any) -> dict[str, Any]:
    """The focaltag checkpoint dict of ``model`` (``focaltag.models.model_checkpoint``) plus training entries."""
    ckpt = model_checkpoint(model)
    ckpt["focaltag_version"] = __version__
    if config is not None:
        ckpt["config"] = config
    ckpt.update(extra)
    return ckpt


def save_checkpoint(path: str | os.PathLike[str], ckpt: dict[str, Any]) -> None:
    """Atomically write ``ckpt`` (a crash mid-save leaves the previous file intact)."""
    save_torch(path, ckpt)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a focaltag checkpoint with ``weights_only=True``; anything else is a one-line CheckpointError.

    The reading and the version rule are ``focaltag.models``' (``read_checkpoint``, ``checkpoint_version``):
    one checkpoint reader for inference and training.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt, file = read_checkpoint(path)
    if checkpoint_version(ckpt, file) is None:
        raise CheckpointError(f"{file}: not a focaltag training checkpoint (no 'focaltag_checkpoint' entry)")
    return dict(ckpt)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states, as weights-only-safe values."""
    py = random.getstate()
    np_state = np.random.get_state(legacy=True)
    if not isinstance(np_state, tuple):  # the global legacy generator is always MT19937, whose state is a tuple
        raise TypeError(f"NumPy's global generator state is not MT19937's tuple: {type(np_state).__name__}")
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
