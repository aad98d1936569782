"""Log-mel spectrogram front end computed inside the model (the paper's features, torchaudio-compatible buffers)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from focaltag.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["LogMelSpectrogram", "hz_to_mel_htk", "mel_to_hz_htk", "mel_filterbank"]


def hz_to_mel_htk(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(*, sample_rate: int, n_fft: int, f_min: float, f_max: float, n_mels: int) -> np.ndarray:
    """Triangular HTK mel filters without area normalisation, float64, shape ``(n_fft // 2 + 1, n_mels)``.

    Filter ``m`` rises linearly from mel point ``m`` to ``m + 1`` and falls to ``m + 2`` (``n_mels + 2``
    points evenly spaced on the HTK mel scale between ``f_min`` and ``f_max``), evaluated at the FFT bin
    frequencies ``k * sample_rate / n_fft``; peak height 1 (``norm=None`` in librosa / torchaudio).
    """
    freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)
    mel_pts = np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2)
    hz_pts = mel_to_hz_htk(mel_pts)
    width = np.diff(hz_pts)  # (n_mels + 1,)
    dist = hz_pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = -dist[:, :-2] / width[:-1]
    falling = dist[:, 2:] / width[1:]
    return np.maximum(0.0, np.minimum(rising, falling))


class LogMelSpectrogram(nn.Module):
    r"""Waveform -> log-power mel spectrogram in dB, the paper's front end.

    ``10 * log10(max(mel, amin))`` of ``mel = fb^T |STFT(x)|^power``. The STFT uses a periodic Hann window
    of ``win_length`` zero-padded to ``n_fft``, frames centred on ``t * hop_length`` (input padded by
    ``n_fft // 2`` on both sides with ``pad_mode``), so a waveform of ``T`` samples gives
    ``1 + T // hop_length`` frames. No ``top_db`` clipping and no reference level (``ref = 1``), so the
    output does not depend on the loudest value of the batch. Computed in float32 even under autocast.

    Buffers (saved in ``state_dict``, follow ``.to(device)``), named and shaped like torchaudio's
    ``MelSpectrogram`` so reference checkpoints map onto them:
    ``fb`` ``(n_fft // 2 + 1, n_mels)`` (torchaudio ``mel_scale.fb``) and ``window`` ``(win_length,)``
    (torchaudio ``spectrogram.window``). With the paper's parameters mel filter 0 is narrower than one FFT
    bin and is all zero (torchaudio warns about the same filter), so output row 0 is ``10*log10(amin)``.

    Args:
        sample_rate (int, optional): Sample rate of the input waveform in Hz. (Default: ``16000``)
        n_fft (int, optional): Size of FFT, creates ``n_fft // 2 + 1`` frequency bins. (Default: ``512``)
        win_length (int or None, optional): Window size in samples, ``<= n_fft``.
            (Default: ``None`` = ``n_fft``, i.e. 512 = 32 ms)
        hop_length (int or None, optional): Hop between frames in samples.
            (Default: ``None`` = ``win_length // 2``, i.e. 256 = 50 % overlap)
        f_min (float, optional): Lowest filter edge in Hz. (Default: ``0.0``)
        f_max (float or None, optional): Highest filter edge in Hz. (Default: ``None`` = ``sample_rate / 2``)
        n_mels (int, optional): Number of mel filters. (Default: ``128``)
        power (float, optional): Exponent of the magnitude, 2 for power. (Default: ``2.0``)
        center (bool, optional): Pad both sides by ``n_fft // 2`` so frame ``t`` is centred on
            ``t * hop_length``. (Default: ``True``)
        pad_mode (str, optional): Padding used when ``center`` is true. (Default: ``"reflect"``)
        amin (float, optional): Floor applied before the log, in power units. (Default: ``1e-10``)

    Example:
        >>> spec = LogMelSpectrogram()
        >>> spec(torch.zeros(2, 73600)).shape
        torch.Size([2, 128, 288])
    """

    fb: torch.Tensor
    window: torch.Tensor

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_mels: int = 128,
        *,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "reflect",
        amin: float = 1e-10,
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        hop_length = win_length // 2 if hop_length is None else hop_length
        f_max = sample_rate / 2 if f_max is None else f_max
        _check(sample_rate > 0, "sample_rate", "> 0", sample_rate)
        _check(n_fft > 0, "n_fft", "> 0", n_fft)
        _check(0 < win_length <= n_fft, "win_length", f"in 1..n_fft={n_fft}", win_length)
        _check(hop_length > 0, "hop_length", "> 0", hop_length)
        _check(n_mels > 0, "n_mels", "> 0", n_mels)
        _check(0.0 <= f_min < f_max <= sample_rate / 2, "f_min/f_max",
               f"0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2}", (f_min, f_max))
        _check(power > 0, "power", "> 0", power)
        _check(amin > 0, "amin", "> 0", amin)
        _check(pad_mode in ("reflect", "constant", "replicate", "circular"), "pad_mode",
               "one of reflect, constant, replicate, circular", pad_mode)
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.n_mels = n_mels
        self.power = float(power)
        self.center = center
        self.pad_mode = pad_mode
        self.amin = float(amin)
        fb = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, f_min=f_min, f_max=f_max, n_mels=n_mels)
        empty = np.flatnonzero(fb.max(axis=0) == 0.0)
        if empty.size:  # expected: the paper's setup leaves filter 0 empty (narrower than one FFT bin)
            logger.debug("LogMelSpectrogram: mel filters %s are all zero (n_mels=%d for n_fft=%d); those "
                         "bins output 10*log10(amin)", empty.tolist(), n_mels, n_fft)
        self.register_buffer("fb", torch.from_numpy(fb).to(torch.float32))
        self.register_buffer("window", torch.hann_window(win_length, periodic=True, dtype=torch.float64)
                             .to(torch.float32))

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
                f"hop_length={self.hop_length}, f_min={self.f_min}, f_max={self.f_max}, n_mels={self.n_mels}, "
                f"power={self.power}, center={self.center}, pad_mode={self.pad_mode!r}, amin={self.amin}")

    def n_frames(self, n_samples: int) -> int:
        """Number of output frames for ``n_samples`` input samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + (n_samples - self.n_fft) // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute log-mel dB.

        Args:
            waveform (Tensor): shape ``(..., time)``, typically ``(batch, time)``.

        Returns:
            Tensor: shape ``(..., n_mels, 1 + time // hop_length)``, float32 dB.
        """
        if waveform.ndim < 1:
            raise ConfigError("LogMelSpectrogram expects a waveform of shape (..., time), got a scalar")
        lead = waveform.shape[:-1]
        x = waveform.reshape(-1, waveform.shape[-1])
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.center:
                pad = self.n_fft // 2
                if self.pad_mode == "reflect" and x.shape[-1] <= pad:
                    raise ConfigError(f"reflect padding needs more than n_fft // 2 = {pad} samples, got a "
                                      f"waveform of {x.shape[-1]}; pad the input (see focaltag.audio.pad_to)")
                x = nn.functional.pad(x.unsqueeze(1), (pad, pad), mode=self.pad_mode).squeeze(1)
            spec = torch.view_as_real(torch.stft(x, n_fft=self.n_fft, hop_length=self.hop_length,
                                                 win_length=self.win_length, window=self.window.float(),
                                                 center=False, return_complex=True))
            power = spec.pow(2).sum(-1)  # re^2 + im^2: no sqrt round trip for the default power=2
            if self.power != 2.0:
                power = power.pow(self.power / 2.0)
            mel = torch.matmul(power.transpose(-1, -2), self.fb.float()).transpose(-1, -2)
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        return db.reshape(*lead, self.n_mels, db.shape[-1])


def _check(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"LogMelSpectrogram: {name} must be {expected}, got {got!r}")

