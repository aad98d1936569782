"""The paper's multi-label losses (BCE, focal, class-balanced focal, distribution-balanced focal) plus ASL.

All work on logits in float32 through ``logsigmoid``/``sigmoid`` of ``±x`` (no ``log(1 - sigmoid(x))``), so
losses and gradients stay finite at extreme logits. Targets are multi-hot; soft targets in ``[0, 1]`` (mixup)
are accepted: the per-element loss is ``y * L_pos + (1 - y) * L_neg``, so for bce/focal/cb_focal/asl a mixed
target gives exactly the lambda-mix of the two hard-target losses.

Unless stated, per-element losses are summed over tags and averaged over the batch (``reduction="batchmean"``);
``bce`` averages over all elements (``reduction="mean"``), as the reference code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from focaltag.errors import ConfigError
from focaltag.training.loss_registry import LOSSES, NEEDS_COUNTS, PRIOR_BIAS

__all__ = ["LOSSES", "build_loss", "output_bias_init", "loss_defaults", "class_balanced_weights",
           "BCELoss", "FocalLoss", "ClassBalancedFocalLoss", "DistributionBalancedFocalLoss", "AsymmetricLoss"]

_REDUCTIONS = ("batchmean", "mean", "sum")

_NEEDS_COUNTS = NEEDS_COUNTS
_RANGES: dict[str, tuple[str, Any]] = {
    "alpha": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "beta": ("in (0, 1)", lambda v: 0.0 < v < 1.0),
    "prior": ("in (0, 1)", lambda v: 0.0 < v < 1.0),
    "clip": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "gamma": (">= 0", lambda v: v >= 0.0),
    "gamma_pos": (">= 0", lambda v: v >= 0.0),
    "gamma_neg": (">= 0", lambda v: v >= 0.0),
    "lam": ("> 0", lambda v: v > 0.0),
    "map_beta": ("> 0", lambda v: v > 0.0),
}
_PRIOR_BIAS = PRIOR_BIAS


def loss_defaults(name: str) -> dict[str, Any]:
    """Default hyper-parameters of loss ``name`` (the keys ``build_loss`` accepts)."""
    _check_name(name)
    return dict(LOSSES[name])


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")


def _resolve(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated by ``hyper``; unknown keys and out-of-range values are ConfigErrors."""
    _check_name(name)
    unknown = sorted(set(hyper) - set(LOSSES[name]))
    if unknown:
        raise ConfigError(f"loss {name!r} got unknown hyper-parameter(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(LOSSES[name])}")
    params = {**LOSSES[name], **hyper}
    for key, value in params.items():
        if key == "reduction":
            if value not in _REDUCTIONS:
                raise ConfigError(f"loss {name!r}: reduction must be one of {', '.join(_REDUCTIONS)}, got {value!r}")
            continue
        if key == "nu":  # a number or one per tag: checked against class_counts by the loss
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"loss {name!r}: {key} must be a finite number, got {value!r}")
        expected, ok = _RANGES.get(key, ("any number", lambda v: True))
        if not ok(value):
            raise ConfigError(f"loss {name!r}: {key} must be {expected}, got {value!r}")
    return params


def _counts_tensor(class_counts: Any, name: str) -> torch.Tensor:
    """Per-tag training counts as a float64 tensor; every count must be a positive finite number."""
    if class_counts is None:
        raise ConfigError(f"loss {name!r} needs class_counts (per-tag training counts in the model's tag order)")
    try:
        counts = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(f"class_counts must be a sequence of numbers, got {type(class_counts).__name__}") from None
    if counts.ndim != 1 or counts.numel() == 0:
        raise ConfigError(f"class_counts must be 1-D with one count per tag, got shape {tuple(counts.shape)}")
    bad = torch.nonzero(~torch.isfinite(counts) | (counts <= 0)).flatten().tolist()
    if bad:
        raise ConfigError(f"class_counts must be positive for every tag; tag index(es) {bad[:10]} have "
                          f"{[float(counts[i]) for i in bad[:10]]} (drop tags without training examples)")
    return counts


def class_balanced_weights(class_counts: Any, beta: float = 0.995) -> torch.Tensor:
    """Cui et al. weights ``(1 - beta) / (1 - beta^n_c)`` rescaled to sum to the number of tags (float32)."""
    counts = _counts_tensor(class_counts, "cb_focal")
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * counts.numel()).to(torch.float32)


def output_bias_init(name: str, **hyper: Any) -> float | None:
    """Classifier bias ``-log((1 - pi) / pi)`` (Lin et al.) for focal and cb_focal; None for the other losses."""
    params = _resolve(name, hyper)
    if name not in _PRIOR_BIAS:
        return None
    pi = float(params["prior"])
    return -math.log((1.0 - pi) / pi)


def build_loss(name: str, class_counts: Any = None, **hyper: Any) -> nn.Module:
    """Build loss ``name`` (``bce``, ``focal``, ``cb_focal``, ``db_focal``, ``asl``): ``module(logits, targets)``.

    Args:
        name (str): Loss name, see :data:`LOSSES` for each one's hyper-parameters and defaults.
        class_counts (sequence of numbers or None): Per-tag training counts in the model's tag order; required
            by ``cb_focal`` and ``db_focal``. (Default: ``None``)
        **hyper: Hyper-parameters overriding the defaults (e.g. ``gamma=1.0``).

    Raises:
        ConfigError: unknown name or hyper-parameter, bad value, missing or non-positive class_counts.
    """
    params = _resolve(name, hyper)
    params.pop("prior", None)
    reduction = params.pop("reduction")
    if name in _NEEDS_COUNTS:
        counts = _counts_tensor(class_counts, name)
    if name == "bce":
        return BCELoss(reduction=reduction)
    if name == "focal":
        return FocalLoss(**params, reduction=reduction)
    if name == "cb_focal":
        return ClassBalancedFocalLoss(class_balanced_weights(counts, params["beta"]), gamma=params["gamma"],
                                      reduction=reduction)
    if name == "db_focal":
        return DistributionBalancedFocalLoss(counts, **params, reduction=reduction)
    return AsymmetricLoss(**params, reduction=reduction)


class _MultiLabelLoss(nn.Module):
    """Shared input checks and reduction; subclasses return the per-element loss."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` logits and ``(B, C)`` targets in ``[0, 1]`` -> scalar loss."""
        if logits.shape != targets.shape or logits.ndim != 2:
            raise ConfigError(f"{type(self).__name__}: logits and targets must both be (batch, n_tags), got "
                              f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        loss = self.elementwise(logits.float(), targets.float())
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / logits.shape[0]

    def _check_tags(self, n_tags: int, expected: int) -> None:
        if n_tags != expected:
            raise ConfigError(f"{type(self).__name__}: built with class_counts for {expected} tags, got logits "
                              f"for {n_tags} tags")

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _focal_terms(logits: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - p)^gamma * -log p`` (positive) and ``p^gamma * -log(1 - p)`` (negative), p = sigmoid(logits)."""
    pos = -F.logsigmoid(logits)
    neg = -F.logsigmoid(-logits)
    if gamma:
        pos = pos * torch.sigmoid(-logits).pow(gamma)
        neg = neg * torch.sigmoid(logits).pow(gamma)
    return pos, neg


class BCELoss(_MultiLabelLoss):
    """Binary cross-entropy on logits (the reference's ``BCEWithLogits``, mean over all elements)."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


class FocalLoss(_MultiLabelLoss):
    """Multi-label focal loss (Lin et al.): ``alpha_t (1 - p_t)^gamma`` times BCE, alpha for positives."""

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "batchmean") -> None:
        super().__init__(reduction)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos, neg = _focal_terms(logits, self.gamma)
        return targets * self.alpha * pos + (1.0 - targets) * (1.0 - self.alpha) * neg

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, {super().extra_repr()}"


class ClassBalancedFocalLoss(_MultiLabelLoss):
    """Focal loss without alpha, tag ``c`` weighted by the class-balanced weight (Cui et al.)."""

    weights: torch.Tensor

    def __init__(self, weights: torch.Tensor | Sequence[float], *, gamma: float = 2.0,
                 reduction: str = "batchmean") -> None:
        super().__init__(reduction)
        self.gamma = float(gamma)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).flatten())

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check_tags(logits.shape[1], self.weights.numel())
        pos, neg = _focal_terms(logits, self.gamma)
        return self.weights * (targets * pos + (1.0 - targets) * neg)

    def extra_repr(self) -> str:
        return f"n_tags={self.weights.numel()}, gamma={self.gamma}, {super().extra_repr()}"


class DistributionBalancedFocalLoss(_MultiLabelLoss):
    """Distribution-balanced focal loss (Wu et al. 2020), computed as the reference code does.

    ``z = logit - nu``; positives use ``FL(sigmoid(z))``, negatives ``FL(sigmoid(lam * z)) / lam``; every element
    is weighted by ``r_c = sigmoid(map_beta * (w_c - map_gamma)) + map_alpha`` with
    ``w_c = (1/n_c) / sum_{k positive} 1/n_k`` (``r_c = 1 + map_alpha`` for a sample without positives).
    """

    inv_counts: torch.Tensor
    nu: torch.Tensor

    def __init__(self, class_counts: Any, *, alpha: float = 0.25, gamma: float = 2.0, lam: float = 2.0,
                 nu: float | Sequence[float] = 0.0, map_alpha: float = 0.1, map_beta: float = 10.0,
                 map_gamma: float = 0.2, reduction: str = "batchmean") -> None:
        super().__init__(reduction)
        counts = _counts_tensor(class_counts, "db_focal")
        try:
            nu_t = torch.as_tensor(np.asarray(nu, dtype=np.float32))
        except (TypeError, ValueError):
            raise ConfigError(f"loss 'db_focal': nu must be a number or one number per tag, got {nu!r}") from None
        if nu_t.ndim > 1 or (nu_t.ndim == 1 and nu_t.numel() != counts.numel()) or not torch.isfinite(nu_t).all():
            raise ConfigError(f"loss 'db_focal': nu must be a finite number or {counts.numel()} numbers, got "
                              f"shape {tuple(nu_t.shape)}")
        self.alpha, self.gamma, self.lam = float(alpha), float(gamma), float(lam)
        self.map_alpha, self.map_beta, self.map_gamma = float(map_alpha), float(map_beta), float(map_gamma)
        self.register_buffer("inv_counts", (1.0 / counts).to(torch.float32))
        self.register_buffer("nu", nu_t)

    def rebalance_weights(self, targets: torch.Tensor) -> torch.Tensor:
        """``r`` of shape ``(B, C)``: the re-balancing weight of every tag of every sample."""
        repeat = (targets * self.inv_counts).sum(dim=1, keepdim=True)  # sum over the sample's positives of 1/n_k
        has_pos = repeat > 0
        w = self.inv_counts / torch.where(has_pos, repeat, torch.ones_like(repeat))
        r = torch.sigmoid(self.map_beta * (w - self.map_gamma)) + self.map_alpha
        return torch.where(has_pos, r, torch.full_like(r, 1.0 + self.map_alpha))

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check_tags(logits.shape[1], self.inv_counts.numel())
        z = logits - self.nu
        pos, _ = _focal_terms(z, self.gamma)
        _, neg = _focal_terms(self.lam * z, self.gamma)
        loss = targets * self.alpha * pos + (1.0 - targets) * (1.0 - self.alpha) * neg / self.lam
        return self.rebalance_weights(targets) * loss

    def extra_repr(self) -> str:
        return (f"n_tags={self.inv_counts.numel()}, alpha={self.alpha}, gamma={self.gamma}, lam={self.lam}, "
                f"{super().extra_repr()}")


class AsymmetricLoss(_MultiLabelLoss):
    """Asymmetric loss (Ridnik et al. 2021): ``gamma_pos``/``gamma_neg`` focusing, probability margin ``clip``.

    Positives: ``(1 - p)^gamma_pos * -log p``; negatives: ``p_m^gamma_neg * -log(1 - p_m)`` with
    ``p_m = max(p - clip, 0)``.
    """

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 reduction: str = "batchmean") -> None:
        super().__init__(reduction)
        self.gamma_pos, self.gamma_neg, self.clip = float(gamma_pos), float(gamma_neg), float(clip)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos, _ = _focal_terms(logits, self.gamma_pos)
        if self.clip > 0:
            p_m = (torch.sigmoid(logits) - self.clip).clamp(min=0.0)
            neg = -torch.log((torch.sigmoid(-logits) + self.clip).clamp(max=1.0))  # -log(1 - p_m)
            if self.gamma_neg:
                neg = neg * p_m.pow(self.gamma_neg)
        else:
            _, neg = _focal_terms(logits, self.gamma_neg)
        return targets * pos + (1.0 - targets) * neg

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, {super().extra_repr()}"
