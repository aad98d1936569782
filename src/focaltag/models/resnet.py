"""Short-chunk ResNet (Won et al. 2020) with the paper's longer receptive field, log-mel front end inside the model."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from focaltag.audio import CHUNK_SAMPLES, SAMPLE_RATE, WON2020_CHUNK_SAMPLES
from focaltag.audio.features import LogMelSpectrogram
from focaltag.data.tags import default_tag_names
from focaltag.errors import ModelError
from focaltag.models._registry import register_model
from focaltag.models.facts import RuntimeFacts
from focaltag.models.layers import ResidualBlock, Stride

__all__ = ["ShortChunkResNet", "PretrainedCfg", "VARIANTS", "default_tag_names"]

N_FFT = 512
HOP_LENGTH = 256
F_MIN = 0.0
F_MAX = 8000.0


@dataclasses.dataclass(frozen=True)
class Variant:
    """A receptive-field variant: the chunk length it is trained on and the per-block (freq, time) strides."""

    chunk_samples: int
    strides: tuple[Stride, ...]
    description: str


VARIANTS: dict[str, Variant] = {
    "paper": Variant(CHUNK_SAMPLES, (2, 2, 2, 2, 2, (2, 3), (2, 3)),
                     "73,600 samples (4.6 s): the last two blocks stride (2, 3) (the paper's model)"),
    "won2020": Variant(WON2020_CHUNK_SAMPLES, (2, 2, 2, 2, 2, 2, 2),
                       "59,049 samples (3.69 s): every block stride 2 (Won et al. 2020)"),
}

_WIDTH_MULTIPLIERS = (1, 1, 2, 2, 2, 2, 4)  # x width: 128,128,256,256,256,256,512 at width=128


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """What inference needs to feed a model: its input spec and the meaning of each output."""

    sample_rate: int
    chunk_samples: int
    n_mels: int
    n_fft: int
    hop_length: int
    f_min: float
    f_max: float
    tag_names: tuple[str, ...]
    variant: str | None  # short-chunk ResNet receptive field; None for other architectures
    width: int | None  # short-chunk ResNet first-block channels; None for other architectures
    n_tags: int
    license: str | None = None

    @property
    def chunk_seconds(self) -> float:
        """Chunk length in seconds."""
        return self.chunk_samples / self.sample_rate


def _check_tag_names(tag_names: Sequence[str] | None, n_tags: int | None) -> tuple[int, tuple[str, ...]]:
    """Reconcile ``n_tags`` and ``tag_names`` (either may be omitted) into a consistent pair."""
    if tag_names is None:
        n = 56 if n_tags is None else n_tags
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ModelError(f"n_tags must be a positive integer, got {n!r}")
        return n, default_tag_names(n)
    if isinstance(tag_names, str):
        raise ModelError(f"tag_names must be a sequence of tag names, got the string {tag_names!r}")
    names = tuple(str(t) for t in tag_names)
    if n_tags is not None and n_tags != len(names):
        raise ModelError(f"n_tags={n_tags} does not match the {len(names)} tag_names given; "
                         "pass matching values or omit n_tags")
    if not names:
        raise ModelError("tag_names is empty: a tagger needs at least one tag")
    if len(set(names)) != len(names):
        dup = sorted({t for t in names if names.count(t) > 1})
        raise ModelError(f"tag_names has duplicates: {', '.join(dup[:5])}")
    return len(names), names


class ShortChunkResNet(nn.Module):
    """Waveform -> log-mel -> seven residual blocks -> max over time -> MLP head -> tag logits.

    Args:
        n_tags (int or None, optional): Number of output tags. (Default: ``None`` = ``len(tag_names)``,
            or 56 when ``tag_names`` is also omitted)
        variant (str, optional): Receptive field, ``"paper"`` (73,600-sample chunks, last two blocks
            stride (2, 3)) or ``"won2020"`` (59,049 samples, all stride 2). (Default: ``"paper"``)
        width (int, optional): Channels of the first block; the blocks use
            ``width x (1, 1, 2, 2, 2, 2, 4)``. (Default: ``128``)
        hidden_dim (int or None, optional): Size of the head's hidden layer. (Default: ``None`` = ``2 * width``)
        tag_names (sequence of str or None, optional): Output tag names. (Default: ``None`` = the 56
            MTG-Jamendo mood/theme tags when there are 56 outputs, else ``tag_000``, ``tag_001``, ...)
        sample_rate (int, optional): Input sample rate in Hz. (Default: ``16000``)
        n_mels (int, optional): Mel bins of the front end. (Default: ``128``)
        drop_rate (float, optional): Dropout before the classifier. (Default: ``0.5``)

    Example:
        >>> model = ShortChunkResNet(width=16).eval()
        >>> model(torch.zeros(2, model.pretrained_cfg.chunk_samples)).shape
        torch.Size([2, 56])
    """

    runtime_facts = RuntimeFacts(
        fp32_modules=("blocks.0.conv1", "blocks.0.downsample.0"), int8_recipe=True, int8_auto=True,
        int8_recheck_margin=0.025, onnx_fp32_without_bf16=True)
    """bf16 with its first residual block (which reads the spectrogram) to float32 grade; int8 under ``auto`` on
    CPUs without native bf16 that have VNNI, re-checked within 0.025: 2.5 times its largest track-level error on
    the six shared recordings (README, int8 accuracy row); onnxruntime float32 on CPUs with neither (AVX2 only),
    where int8 bought nothing and onnxruntime float32 ran the network 1.68x eager torch (shared CPU note)."""

    def __init__(
        self,
        n_tags: int | None = None,
        *,
        variant: str = "paper",
        width: int = 128,
        hidden_dim: int | None = None,
        tag_names: Sequence[str] | None = None,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = 128,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ModelError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        for name, value in (("width", width), ("sample_rate", sample_rate), ("n_mels", n_mels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelError(f"{name} must be a positive integer, got {value!r}")
        hidden_dim = 2 * width if hidden_dim is None else hidden_dim
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ModelError(f"hidden_dim must be a positive integer, got {hidden_dim!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ModelError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        n_tags, names = _check_tag_names(tag_names, n_tags)
        spec = VARIANTS[variant]
        f_max = min(F_MAX, sample_rate / 2)

        self.model_args: dict[str, Any] = dict(n_tags=n_tags, variant=variant, width=width, hidden_dim=hidden_dim,
                                               sample_rate=sample_rate, n_mels=n_mels, drop_rate=float(drop_rate))
        self.model_name = "short_chunk_resnet"
        self.pretrained_cfg = PretrainedCfg(
            sample_rate=sample_rate, chunk_samples=spec.chunk_samples, n_mels=n_mels, n_fft=N_FFT,
            hop_length=HOP_LENGTH, f_min=F_MIN, f_max=f_max, tag_names=names, variant=variant, width=width,
            n_tags=n_tags)
        self.num_features = width * _WIDTH_MULTIPLIERS[-1]

        self.frontend = LogMelSpectrogram(sample_rate=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                          f_min=F_MIN, f_max=f_max, n_mels=n_mels)
        self.spec_bn = nn.BatchNorm2d(1)
        blocks = []
        in_ch = 1
        for mult, stride in zip(_WIDTH_MULTIPLIERS, spec.strides, strict=True):
            blocks.append(ResidualBlock(in_ch, width * mult, stride=stride))
            in_ch = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(OrderedDict(
            fc1=nn.Linear(self.num_features, hidden_dim),
            bn=nn.BatchNorm1d(hidden_dim),
            act=nn.ReLU(inplace=True),
            drop=nn.Dropout(drop_rate),
        ))
        self.fc = nn.Linear(hidden_dim, n_tags)

    @property
    def n_tags(self) -> int:
        """Number of output tags."""
        return self.fc.out_features

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` 16 kHz waveform -> ``(B, num_features, F', T')`` feature map (F' = 1 for 128 mels)."""
        if waveform.ndim != 2:
            raise ModelError(f"expected a waveform batch of shape (batch, samples), got shape {tuple(waveform.shape)}")
        x = self.frontend(waveform).unsqueeze(1)
        # a one-channel map is both NCHW- and NHWC-contiguous, so after ``model.to(memory_format=
        # torch.channels_last)`` the first conv already follows its weights into channels_last
        x = self.spec_bn(x)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> max over frequency and time -> hidden layer -> logits (or the hidden layer)."""
        x = x.amax(dim=(2, 3))
        x = self.head(x)
        return x if pre_logits else self.fc(x)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform at ``pretrained_cfg.sample_rate`` -> ``(B, n_tags)`` logits (no sigmoid)."""
        return self.forward_head(self.forward_features(waveform))

    def get_classifier(self) -> nn.Linear:
        """The output layer; its input (``hidden_dim`` values) is the embedding."""
        return self.fc

    def reset_classifier(self, n_tags: int, tag_names: Sequence[str] | None = None) -> None:
        """Replace the output layer with a freshly initialised one for ``n_tags`` tags (fine-tuning)."""
        n_tags, names = _check_tag_names(tag_names, n_tags)
        ref = self.fc.weight
        self.fc = nn.Linear(self.fc.in_features, n_tags).to(device=ref.device, dtype=ref.dtype)
        self.model_args["n_tags"] = n_tags
        self.pretrained_cfg = dataclasses.replace(self.pretrained_cfg, n_tags=n_tags, tag_names=names)

    @torch.no_grad()
    def set_output_bias(self, value: float | Sequence[float] | torch.Tensor) -> None:
        """Set the classifier bias, e.g. to ``-log((1 - pi) / pi)`` so initial outputs equal the prior ``pi``."""
        bias = torch.as_tensor(value, dtype=self.fc.bias.dtype, device=self.fc.bias.device)
        if bias.ndim == 0:
            self.fc.bias.fill_(bias)
            return
        if bias.shape != self.fc.bias.shape:
            raise ModelError(f"set_output_bias: expected a scalar or {self.n_tags} values, got shape "
                             f"{tuple(bias.shape)}")
        self.fc.bias.copy_(bias)


@register_model
def short_chunk_resnet(**kwargs: Any) -> ShortChunkResNet:
    """The paper's short-chunk ResNet; ``variant="paper"`` (4.6 s, default) or ``"won2020"`` (3.69 s)."""
    return ShortChunkResNet(**kwargs)


@register_model
def short_chunk_resnet_won2020(**kwargs: Any) -> ShortChunkResNet:
    """Won et al. (2020)'s receptive field: 59,049-sample chunks, every block stride 2."""
    variant = kwargs.pop("variant", "won2020")
    if variant != "won2020":
        raise ModelError(f"short_chunk_resnet_won2020 has variant 'won2020', got variant={variant!r}; "
                         "use short_chunk_resnet to choose the variant")
    return ShortChunkResNet(variant="won2020", **kwargs)
