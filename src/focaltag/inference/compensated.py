"""A convolution or linear layer computed in bf16 with float32-grade products (bf16 inference's precise layers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CompensatedBf16", "split_bf16"]

# the functional form of each layer kind CompensatedBf16 takes
_FUNCTIONAL: dict[str, Callable[..., torch.Tensor]] = {"Linear": F.linear, "Conv1d": F.conv1d, "Conv2d": F.conv2d}


def split_bf16(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (float32) as bf16 ``(hi, lo)`` with ``hi + lo == x`` to ~2^-17 relative (16 significant bits)."""
    x = x.float()
    hi = x.to(torch.bfloat16)
    return hi, (x - hi.float()).to(torch.bfloat16)


class CompensatedBf16(nn.Module):
    """``layer`` (Conv1d, Conv2d or Linear) evaluated in bf16 with float32-grade products, output rounded to bf16.

    Input and weight are split into bf16 high and low parts (:func:`split_bf16`), and one bf16 pass over the
    channels ``[x_hi, x_lo, x_hi]`` with weights ``[w_hi, w_hi, w_lo]`` (three times the input channels) sums
    ``w_hi x_hi + w_hi x_lo + w_lo x_hi``, which is ``w x`` to ~2^-16 relative (the dropped ``w_lo x_lo`` is
    ~2^-18). What is left of bf16's error is the rounding of the output and of the bias (~2^-9 relative).
    The spectrogram-reading layers have one input channel, so the pass is cheap: about plain bf16's time and less
    than float32's inside a bf16 model (README, "bf16 design" row).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    @staticmethod
    def supports(layer: nn.Module) -> TypeGuard[nn.Linear | nn.Conv1d | nn.Conv2d]:
        """Whether ``layer`` can be split: Linear, or Conv1d / Conv2d with groups 1 and numeric zero padding."""
        if isinstance(layer, nn.Linear):
            return True
        return (isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups == 1 and layer.padding_mode == "zeros"
                and not isinstance(layer.padding, str))

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not self.supports(layer):
            raise ValueError(f"CompensatedBf16 takes Linear, or Conv1d / Conv2d with groups=1, padding_mode='zeros' "
                             f"and numeric padding; got {layer!r}")
        self.dim = -1 if isinstance(layer, nn.Linear) else 1  # the input-feature / channel axis
        hi, lo = split_bf16(layer.weight.detach())
        self.register_buffer("weight", torch.cat([hi, hi, lo], dim=self.dim))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().to(torch.bfloat16))
        self.kind = type(layer).__name__
        self.op = _FUNCTIONAL[self.kind]
        self.conv_args: dict[str, Any] = {} if isinstance(layer, nn.Linear) else dict(
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hi, lo = split_bf16(x)
        stacked = torch.cat([hi, lo, hi], dim=self.dim)
        if stacked.ndim == 4:
            stacked = stacked.contiguous(memory_format=torch.channels_last)  # oneDNN's native bf16 layout
        return self.op(stacked, self.weight, self.bias, **self.conv_args)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight.shape)} (hi, hi, lo)"
