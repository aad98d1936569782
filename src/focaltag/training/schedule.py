"""The paper's optimisation schedule: Adam, then SGD from the best checkpoint with step-wise lr decay.

Phase 0 is Adam (``optim.adam_epochs`` epochs); phase 1 is Nesterov SGD at ``optim.sgd_lr``; every further
``optim.lr_decay_every`` epochs starts the next phase with the lr divided by ``optim.lr_decay_factor``. Each
phase change first reloads the best weights so far (``optim.reload_best``), as the reference code does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from focaltag.training.config import OptimConfig

__all__ = ["phase_of_epoch", "phase_lr", "make_optimizer", "change_phase"]

log = logging.getLogger(__name__)


def phase_of_epoch(optim: OptimConfig, epoch: int) -> int:
    """Schedule phase of 0-based ``epoch``: 0 = Adam, 1 = SGD at ``sgd_lr``, k = SGD at ``sgd_lr / f^(k-1)``."""
    if epoch < optim.adam_epochs:
        return 0
    return 1 + (epoch - optim.adam_epochs) // optim.lr_decay_every


def phase_lr(optim: OptimConfig, phase: int) -> float:
    """Learning rate of a schedule phase."""
    return optim.adam_lr if phase == 0 else optim.sgd_lr / optim.lr_decay_factor ** (phase - 1)


def make_optimizer(params: Iterable[torch.Tensor], optim: OptimConfig, phase: int) -> torch.optim.Optimizer:
    """Adam (phase 0) or Nesterov SGD (later phases) with the phase's learning rate; the fused kernels where
    this PyTorch has them for the parameters' device: one kernel instead of a loop over tensors, a large share
    of a CPU training step (``bench/train.py`` measures the loop's step against the reference's)."""
    params = list(params)
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    if phase == 0:
        cls, kwargs = torch.optim.Adam, {"lr": optim.adam_lr, "weight_decay": optim.adam_weight_decay}
    else:
        cls, kwargs = torch.optim.SGD, {"lr": phase_lr(optim, phase), "momentum": optim.sgd_momentum,
                                        "nesterov": optim.sgd_nesterov and optim.sgd_momentum > 0,
                                        "weight_decay": optim.sgd_weight_decay}
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / PyTorch version
        return cls(params, **kwargs)


def change_phase(model: nn.Module, optimizer: torch.optim.Optimizer, optim: OptimConfig, old: int, new: int,
                 best_state: Mapping[str, torch.Tensor] | None, *, verbose: bool = True) -> torch.optim.Optimizer:
    """Enter phase ``new``: reload the best weights, then a fresh SGD (from Adam) or the divided lr (SGD keeps
    its momentum buffers, as the reference's ``param_group['lr'] = ...``)."""
    reload = optim.reload_best and best_state is not None
    if reload and best_state is not None:
        model.load_state_dict(best_state)
    if old == 0 or new == 0:
        optimizer = make_optimizer(model.parameters(), optim, new)
    else:
        for group in optimizer.param_groups:
            group["lr"] = phase_lr(optim, new)
    if verbose:
        log.info("schedule: %s, lr %g%s", "Adam" if new == 0 else "SGD", phase_lr(optim, new),
                 " (best weights reloaded)" if reload else "")
    return optimizer
