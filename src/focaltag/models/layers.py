"""Building blocks of the short-chunk ResNet (one concept per file, as timm's ``layers/``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "Stride"]

Stride = int | tuple[int, int]


class ResidualBlock(nn.Module):
    """Two-conv residual block with a conv3x3 projection shortcut (the reference ``Res_2d``).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where ``shortcut`` is ``bn(conv3x3(x, stride))``
    when the stride or the width changes and the identity otherwise. Convolutions keep their bias, as the
    reference code does (its checkpoints carry ``conv_*.bias``), and BatchNorm uses PyTorch's defaults.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int or (int, int), optional): Stride of the first conv and of the shortcut, as
            ``(frequency, time)``. (Default: ``2``)
        kernel_size (int, optional): Square kernel size; padding keeps ``size / stride``. (Default: ``3``)
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: Stride = 2, kernel_size: int = 3) -> None:
        super().__init__()
        strides = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride=strides, padding=pad)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if strides != (1, 1) or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size, stride=strides, padding=pad),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, F, T) -> (B, C_out, F / s_f, T / s_t)`` (sizes rounded up)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + shortcut)
