"""Won et al. (2020)'s spectrogram taggers FCN, CRNN and Musicnn, able to load their published weights exactly.

"Evaluation of CNN-based Automatic Music Tagging Models" (SMC 2020) compared these networks on one front end:
16 kHz audio, a 96-band HTK power mel spectrogram (n_fft 512, hop 256, 0-8 kHz, no area normalisation), dB
``10 * log10(max(p, 1e-10))`` and a one-channel BatchNorm ``spec_bn``. FCN and CRNN read 29 s (464,000
samples), Musicnn 3 s (48,000).

The submodules carry the parameter names of the published state_dicts (``layer1.conv``, ``layer5`` GRU,
``layers.0``, ``dense2``...), so their checkpoints load after renaming only the front end (torchaudio's
``spec.mel_scale.fb`` / ``spec.spectrogram.window`` -> ``frontend.fb`` / ``frontend.window``, see
``focaltag.models._checkpoint``). As focaltag's other models, ``forward`` returns logits: the published
models end in a sigmoid, which focaltag's inference applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from focaltag.audio.features import LogMelSpectrogram
from focaltag.errors import ModelError
from focaltag.models._registry import register_model
from focaltag.models.facts import RuntimeFacts
from focaltag.models.resnet import PretrainedCfg, _check_tag_names

__all__ = ["FCN", "CRNN", "Musicnn", "Won2020Tagger", "FCN_CHUNK_SAMPLES", "MUSICNN_CHUNK_SAMPLES",
           "WON2020_ARCHITECTURES"]

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
F_MIN = 0.0
F_MAX = 8000.0
N_MELS = 96
FCN_CHUNK_SAMPLES = 29 * SAMPLE_RATE  # 464,000: FCN and CRNN
MUSICNN_CHUNK_SAMPLES = 3 * SAMPLE_RATE  # 48,000

_FCN_BLOCKS = ((64, (2, 4)), (128, (2, 4)), (128, (2, 4)), (128, (3, 5)), (64, (4, 4)))  # (width, pool)
_CRNN_BLOCKS = ((64, (2, 2)), (128, (3, 3)), (128, (4, 4)), (128, (4, 4)))


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return value


def _drop_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ModelError(f"drop_rate must be a number in [0, 1), got {value!r}")
    return float(value)


class ConvPool2d(nn.Module):
    """3x3 convolution (padding 1, with bias) -> BatchNorm -> ReLU -> max-pool of ``pool`` (frequency, time)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class Won2020Tagger(nn.Module):
    """Shared front end (log-mel + ``spec_bn``), config and output-layer helpers of the three networks.

    Subclasses build their body, name their output layer in ``_classifier_attr`` and implement ``_body``
    (normalised spectrogram ``(B, 1, 96, frames)`` -> pre-dropout features ``(B, C)``).
    """

    _classifier_attr = "dense"
    model_name = "won2020"

    def __init__(self, n_tags: int | None, tag_names: Sequence[str] | None, chunk_samples: int,
                 model_args: dict[str, Any]) -> None:
        super().__init__()
        n_tags, names = _check_tag_names(tag_names, n_tags)
        self.model_args: dict[str, Any] = {"n_tags": n_tags, **model_args}
        self.pretrained_cfg = PretrainedCfg(
            sample_rate=SAMPLE_RATE, chunk_samples=chunk_samples, n_mels=N_MELS, n_fft=N_FFT,
            hop_length=HOP_LENGTH, f_min=F_MIN, f_max=F_MAX, tag_names=names, variant=None, width=None,
            n_tags=n_tags, license=None)
        self.frontend = LogMelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                          f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, amin=1e-10)
        self.spec_bn = nn.BatchNorm2d(1)
        self.dropout = nn.Dropout(model_args["drop_rate"])

    @property
    def classifier(self) -> nn.Linear:
        """The output layer (``dense`` or ``dense2`` in the published layouts)."""
        layer = getattr(self, self._classifier_attr)
        assert isinstance(layer, nn.Linear)
        return layer

    @property
    def n_tags(self) -> int:
        """Number of output tags."""
        return self.classifier.out_features

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` 16 kHz waveform -> ``spec_bn``-normalised log-mel ``(B, 1, 96, 1 + T // 256)``."""
        if waveform.ndim != 2:
            raise ModelError(f"expected a waveform batch of shape (batch, samples), got shape {tuple(waveform.shape)}")
        return self.spec_bn(self.frontend(waveform).unsqueeze(1))

    def _body(self, spec: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> the features the classifier reads, before dropout, ``(B, C)``."""
        return self._body(self.spectrogram(waveform))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> dropout -> output layer (``pre_logits``: the features after dropout)."""
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform at 16 kHz -> ``(B, n_tags)`` logits (no sigmoid)."""
        return self.forward_head(self.forward_features(waveform))

    def get_classifier(self) -> nn.Linear:
        """The output layer; its input (the features after dropout, the identity in eval mode) is the embedding."""
        return self.classifier

    def reset_classifier(self, n_tags: int, tag_names: Sequence[str] | None = None) -> None:
        """Replace the output layer with a freshly initialised one for ``n_tags`` tags (fine-tuning)."""
        n_tags, names = _check_tag_names(tag_names, n_tags)
        ref = self.classifier.weight
        layer = nn.Linear(self.classifier.in_features, n_tags).to(device=ref.device, dtype=ref.dtype)
        setattr(self, self._classifier_attr, layer)
        self.model_args["n_tags"] = n_tags
        self.pretrained_cfg = dataclasses.replace(self.pretrained_cfg, n_tags=n_tags, tag_names=names)

    @torch.no_grad()
    def set_output_bias(self, value: float | Sequence[float] | torch.Tensor) -> None:
        """Set the classifier bias, e.g. to ``-log((1 - pi) / pi)`` so initial outputs equal the prior ``pi``."""
        bias_param = self.classifier.bias
        bias = torch.as_tensor(value, dtype=bias_param.dtype, device=bias_param.device)
        if bias.ndim == 0:
            bias_param.fill_(bias)
            return
        if bias.shape != bias_param.shape:
            raise ModelError(f"set_output_bias: expected a scalar or {self.n_tags} values, got shape "
                             f"{tuple(bias.shape)}")
        bias_param.copy_(bias)


class FCN(Won2020Tagger):
    """Fully convolutional network (Choi et al. 2016) as Won et al. trained it: 29 s in, 50 tags out.

    Five ``ConvPool2d`` blocks (widths 64, 128, 128, 128, 64; pools (2,4), (2,4), (2,4), (3,5), (4,4)) shrink
    the 96 x 1813 spectrogram of 464,000 samples to 1 x 1; dropout; linear 64 -> ``n_tags``. Other input
    lengths leave a map larger than 1 x 1 and are refused.

    Args:
        n_tags (int or None, optional): Output tags. (Default: ``len(tag_names)``, else 56)
        tag_names (sequence of str or None, optional): Output tag names. (Default: placeholders / mood tags)
        drop_rate (float, optional): Dropout before the output layer. (Default: ``0.5``)
    """

    runtime_facts = RuntimeFacts(fp32_modules=("layer1",), onnx_fp32_without_bf16=True)
    """bf16 with the full-resolution first block to float32 grade; no int8 (README, int8 rows); onnxruntime
    float32 on CPUs without native bf16, where it ran FCN's network 6.4x eager torch (shared CPU note)."""

    model_name = "fcn"

    def __init__(self, n_tags: int | None = None, *, tag_names: Sequence[str] | None = None,
                 drop_rate: float = 0.5) -> None:
        super().__init__(n_tags, tag_names, FCN_CHUNK_SAMPLES, {"drop_rate": _drop_rate(drop_rate)})
        in_ch = 1
        for i, (width, pool) in enumerate(_FCN_BLOCKS, start=1):
            setattr(self, f"layer{i}", ConvPool2d(in_ch, width, pool))
            in_ch = width
        self.num_features = in_ch
        self.dense = nn.Linear(in_ch, self.model_args["n_tags"])

    def _body(self, spec: torch.Tensor) -> torch.Tensor:
        frames = int(spec.shape[-1])
        for _, (_, pool_t) in _FCN_BLOCKS:
            frames //= pool_t
        if frames != 1:
            raise ModelError(f"FCN needs {FCN_CHUNK_SAMPLES} samples (29 s at 16 kHz) per input, got "
                             f"{spec.shape[-1]} frames' worth; pad or cut the input to that length")
        x = spec
        for i in range(1, len(_FCN_BLOCKS) + 1):
            x = getattr(self, f"layer{i}")(x)
        return x.flatten(1)


class CRNN(Won2020Tagger):
    """Convolutional recurrent network (Choi et al. 2017) as Won et al. trained it: 29 s in, 50 tags out.

    Four ``ConvPool2d`` blocks (64, 128, 128, 128; pools (2,2), (3,3), (4,4), (4,4)) reduce the 96 mel bands to
    one; a two-layer GRU (``hidden_size``) runs over the remaining frames; its last step, dropout and a linear
    layer give the logits. Any input of at least 96 frames' worth of samples works; training uses 464,000.

    Args:
        n_tags (int or None, optional): Output tags. (Default: ``len(tag_names)``, else 56)
        tag_names (sequence of str or None, optional): Output tag names.
        hidden_size (int, optional): GRU state size. (Default: ``32``)
        drop_rate (float, optional): Dropout before the output layer. (Default: ``0.5``)
    """

    runtime_facts = RuntimeFacts(fp32_modules=("layer1",), onnx_fp32_without_bf16=True)
    """bf16 with the full-resolution first block to float32 grade; no int8 (README, int8 rows); onnxruntime
    float32 on CPUs without native bf16, where it ran FCN's network 6.4x eager torch (shared CPU note)."""

    model_name = "crnn"

    def __init__(self, n_tags: int | None = None, *, tag_names: Sequence[str] | None = None,
                 hidden_size: int = 32, drop_rate: float = 0.5) -> None:
        hidden_size = _positive_int("hidden_size", hidden_size)
        super().__init__(n_tags, tag_names, FCN_CHUNK_SAMPLES,
                         {"hidden_size": hidden_size, "drop_rate": _drop_rate(drop_rate)})
        in_ch = 1
        for i, (width, pool) in enumerate(_CRNN_BLOCKS, start=1):
            setattr(self, f"layer{i}", ConvPool2d(in_ch, width, pool))
            in_ch = width
        self.layer5 = nn.GRU(in_ch, hidden_size, num_layers=2, batch_first=True)
        self.num_features = hidden_size
        self.dense = nn.Linear(hidden_size, self.model_args["n_tags"])

    def _body(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.shape[-1] < 96:  # the time pools multiply to 2 * 3 * 4 * 4 = 96 frames
            raise ModelError(f"CRNN needs at least 96 frames (24,320 samples), got {spec.shape[-1]}; feed "
                             f"{FCN_CHUNK_SAMPLES} samples (29 s at 16 kHz)")
        x = spec
        for i in range(1, len(_CRNN_BLOCKS) + 1):
            x = getattr(self, f"layer{i}")(x)
        seq = x.squeeze(2).transpose(1, 2)  # (B, frames', C)
        out, _ = self.layer5(seq)
        return out[:, -1]


class VerticalBranch(nn.Module):
    """Musicnn timbre branch: a tall 2-D conv over mel bands x 7 frames -> BN -> ReLU -> max over frequency."""

    def __init__(self, filters: int, height: int, width: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (height, width), padding=(0, width // 2))
        self.bn = nn.BatchNorm2d(filters)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T) -> (B, filters, T)``."""
        return torch.relu(self.bn(self.conv(spec))).amax(dim=2)


class HorizontalBranch(nn.Module):
    """Musicnn temporal branch: mean over frequency -> 1-D conv of ``length`` frames -> BN -> ReLU."""

    def __init__(self, filters: int, length: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, filters, length, padding=length // 2)
        self.bn = nn.BatchNorm1d(filters)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T) -> (B, filters, T)`` (odd ``length`` keeps T)."""
        return torch.relu(self.bn(self.conv(spec.mean(dim=2))))


class ConvBlock1d(nn.Module):
    """1-D conv (kernel 7, padding 3) -> BN -> ReLU, the Musicnn back-end block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Musicnn(Won2020Tagger):
    """Musicnn (Pons et al. 2018) as Won et al. trained it: 3 s in, 50 tags out.

    Front end: two vertical branches (``vertical_filters`` conv filters of 0.7 x and 0.4 x the mel bands by 7
    frames, max over frequency) and three horizontal ones (``horizontal_filters`` 1-D filters of 129, 65 and 33
    frames on the band mean), concatenated over time. Back end: three ``ConvBlock1d`` of ``backend_channels``
    with residual sums; max and mean over time of [front, res1, res2, res3]; dense ``dense_channels`` -> BN
    -> ReLU -> dropout -> dense ``n_tags``. Defaults are the MagnaTagATune / MTG-Jamendo size (the MSD one
    was 512 / 500).

    Args:
        n_tags (int or None, optional): Output tags. (Default: ``len(tag_names)``, else 56)
        tag_names (sequence of str or None, optional): Output tag names.
        backend_channels (int, optional): Channels of the back-end blocks. (Default: ``64``)
        dense_channels (int, optional): Size of the hidden dense layer. (Default: ``200``)
        drop_rate (float, optional): Dropout before the output layer. (Default: ``0.5``)
    """

    runtime_facts = RuntimeFacts(bf16_on_cpu=False)
    """float32 on CPUs under ``auto``: bf16 with its re-checks was no faster there (README, architectures row)."""

    model_name = "musicnn"
    _classifier_attr = "dense2"
    vertical_filters = 204
    horizontal_filters = 51
    horizontal_lengths = (129, 65, 33)

    def __init__(self, n_tags: int | None = None, *, tag_names: Sequence[str] | None = None,
                 backend_channels: int = 64, dense_channels: int = 200, drop_rate: float = 0.5) -> None:
        backend_channels = _positive_int("backend_channels", backend_channels)
        dense_channels = _positive_int("dense_channels", dense_channels)
        super().__init__(n_tags, tag_names, MUSICNN_CHUNK_SAMPLES,
                         {"backend_channels": backend_channels, "dense_channels": dense_channels,
                          "drop_rate": _drop_rate(drop_rate)})
        heights = (int(0.7 * N_MELS), int(0.4 * N_MELS))  # 67 and 38 bands
        branches: list[nn.Module] = [VerticalBranch(self.vertical_filters, h) for h in heights]
        branches += [HorizontalBranch(self.horizontal_filters, n) for n in self.horizontal_lengths]
        self.layers = nn.ModuleList(branches)
        front = len(heights) * self.vertical_filters + len(self.horizontal_lengths) * self.horizontal_filters
        self.layer1 = ConvBlock1d(front, backend_channels)
        self.layer2 = ConvBlock1d(backend_channels, backend_channels)
        self.layer3 = ConvBlock1d(backend_channels, backend_channels)
        self.num_features = 2 * (front + 3 * backend_channels)
        self.dense1 = nn.Linear(self.num_features, dense_channels)
        self.bn = nn.BatchNorm1d(dense_channels)
        self.dense2 = nn.Linear(dense_channels, self.model_args["n_tags"])

    def _body(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.shape[-1] < 2:
            raise ModelError(f"Musicnn needs at least 2 frames; feed {MUSICNN_CHUNK_SAMPLES} samples (3 s)")
        front = torch.cat([branch(spec) for branch in self.layers], dim=1)
        res1 = self.layer1(front)
        res2 = self.layer2(res1) + res1
        res3 = self.layer3(res2) + res2
        stacked = torch.cat([front, res1, res2, res3], dim=1)
        pooled = torch.cat([stacked.amax(dim=2), stacked.mean(dim=2)], dim=1)
        return torch.relu(self.bn(self.dense1(pooled)))


WON2020_ARCHITECTURES = ("fcn", "crnn", "musicnn")


@register_model
def fcn(**kwargs: Any) -> FCN:
    """Won et al. (2020)'s FCN: 29 s (464,000 samples) of 16 kHz audio, 96-band log-mel front end."""
    return FCN(**kwargs)


@register_model
def crnn(**kwargs: Any) -> CRNN:
    """Won et al. (2020)'s CRNN: 29 s (464,000 samples), four conv blocks and a two-layer GRU."""
    return CRNN(**kwargs)


@register_model
def musicnn(**kwargs: Any) -> Musicnn:
    """Won et al. (2020)'s Musicnn: 3 s (48,000 samples), musically motivated front end."""
    return Musicnn(**kwargs)
