"""Waveform mixup (Zhang et al. 2018): one lambda ~ Beta(alpha, alpha) per batch, targets mixed through the loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from focaltag.errors import ConfigError

__all__ = ["MixedBatch", "mixup_batch", "mixup_loss"]


@dataclass(frozen=True)
class MixedBatch:
    """A mixed batch: ``inputs = lam * x + (1 - lam) * x[perm]``; ``targets_b = targets[perm]``."""

    inputs: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: float
    perm: torch.Tensor


def mixup_batch(inputs: torch.Tensor, targets: torch.Tensor, *, alpha: float = 1.0,
                rng: np.random.Generator | None = None) -> MixedBatch:
    """Mix each waveform with another of the same batch (a random permutation) by one lambda.

    Args:
        inputs (Tensor of shape (B, T)): Waveforms (any shape with the batch first).
        targets (Tensor of shape (B, n_tags)): Multi-hot targets.
        alpha (float, optional): Beta(alpha, alpha) parameter; 1 gives a uniform lambda. (Default: ``1.0``)
        rng (numpy Generator, optional): Source of lambda and the permutation (seed it for reproducible
            runs). (Default: a fresh unseeded generator)
    """
    if alpha <= 0:
        raise ConfigError(f"mixup alpha must be > 0, got {alpha}")
    if inputs.shape[0] != targets.shape[0]:
        raise ConfigError(f"inputs and targets need the same batch size, got {inputs.shape[0]} and "
                          f"{targets.shape[0]}")
    rng = rng if rng is not None else np.random.default_rng()
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(inputs.shape[0])).to(inputs.device)
    mixed = inputs * lam + inputs.index_select(0, perm) * (1.0 - lam)
    return MixedBatch(mixed, targets, targets.index_select(0, perm), lam, perm)


def mixup_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
               batch: MixedBatch) -> torch.Tensor:
    """``lam * L(logits, y_a) + (1 - lam) * L(logits, y_b)`` (the mixup objective of Zhang et al.)."""
    return batch.lam * loss_fn(logits, batch.targets_a) + (1.0 - batch.lam) * loss_fn(logits, batch.targets_b)
