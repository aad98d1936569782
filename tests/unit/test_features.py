"""LogMelSpectrogram against an independent float64 numpy implementation of the paper's definition and librosa."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from focaltag.audio.features import LogMelSpectrogram, mel_filterbank
from focaltag.errors import ConfigError

SR, N_FFT, HOP, N_MELS = 16000, 512, 256, 128


def _htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _htk_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def reference_fb(sr=SR, n_fft=N_FFT, n_mels=N_MELS, f_min=0.0, f_max=8000.0) -> np.ndarray:
    """Triangles built by linear interpolation through (left, 0), (centre, 1), (right, 0)."""
    edges = _htk_hz(np.linspace(_htk_mel(f_min), _htk_mel(f_max), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        fb[:, m] = np.interp(freqs, edges[m:m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
    return fb


def reference_power_mel(x: np.ndarray) -> np.ndarray:
    """float64 mel power (n_mels, frames): reflect-centred frames, periodic Hann, |rfft|^2, filterbank."""
    x = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (x.size - N_FFT) // HOP
    frames = np.stack([x[t * HOP:t * HOP + N_FFT] for t in range(n_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power @ reference_fb()).T


def to_db(p: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(p, 1e-10))


def ours(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return LogMelSpectrogram()(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()


def test_filterbank_matches_interpolated_triangles():
    np.testing.assert_allclose(mel_filterbank(sample_rate=SR, n_fft=N_FFT, f_min=0.0, f_max=8000.0,
                                              n_mels=N_MELS), reference_fb(), atol=1e-12)


def test_first_filter_is_empty_as_hand_computed():
    # mel step = 2595*log10(1 + 8000/700) / 129 = 22.016 mel -> filter 0 spans 0..27.6 Hz, below the first
    # non-zero FFT bin (31.25 Hz); the 0 Hz bin sits on its left edge (weight 0). Filter 1 reaches 31.25 Hz.
    fb = LogMelSpectrogram().fb.numpy()
    step = 2595 * np.log10(1 + 8000 / 700) / 129
    assert 700 * (10 ** (2 * step / 2595) - 1) < 31.25 < 700 * (10 ** (3 * step / 2595) - 1)
    assert fb[:, 0].max() == 0.0
    assert fb[1, 1] > 0.0


def test_noise_parity_with_numpy_definition():
    x = np.random.default_rng(0).standard_normal(SR * 3).astype(np.float32) * 0.1
    ref_p = reference_power_mel(x)
    got = ours(x)
    assert got.shape == ref_p.shape == (N_MELS, 1 + x.size // HOP)
    mask = ref_p > 1e-8
    assert mask.mean() > 0.99
    assert np.abs(got - to_db(ref_p))[mask].max() < 1e-3


def _music_excerpt(music_dir: Path) -> np.ndarray:
    from focaltag.audio.decode import load_audio

    x = load_audio(music_dir / "battle-epic.ogg")
    return x[SR * 20:SR * 40]


def test_real_music_parity_with_numpy_definition(music_dir):
    x = _music_excerpt(music_dir)
    ref_p = reference_power_mel(x)
    ref_db = to_db(ref_p)
    got = ours(x)
    mask = (ref_p > 1e-8) & (ref_db >= ref_db.max(axis=0, keepdims=True) - 50.0)
    assert mask.mean() > 0.5
    assert np.abs(got - ref_db)[mask].max() < 1e-3


def test_librosa_parity(music_dir):
    librosa = pytest.importorskip("librosa")
    noise = np.random.default_rng(1).standard_normal(SR * 2).astype(np.float32) * 0.1
    for x in (noise, _music_excerpt(music_dir)):
        p = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=SR, n_fft=N_FFT, hop_length=HOP,
                                           win_length=N_FFT, window="hann", center=True, pad_mode="reflect",
                                           power=2.0, n_mels=N_MELS, fmin=0.0, fmax=8000.0, htk=True, norm=None)
        db = to_db(p)
        mask = (p > 1e-8) & (db >= db.max(axis=0, keepdims=True) - 50.0)
        assert np.abs(ours(x) - db)[mask].max() < 1e-3


@pytest.mark.parametrize("n_samples", [73600, 59049, 16000, 1000])
def test_output_shape(n_samples):
    spec = LogMelSpectrogram()
    out = spec(torch.zeros(3, n_samples))
    assert out.shape == (3, 128, 1 + n_samples // 256)
    assert spec.n_frames(n_samples) == out.shape[-1]
    assert out.dtype == torch.float32
    assert torch.all(out == -100.0)  # silence -> 10*log10(1e-10)


def test_batch_equals_items_and_leading_dims():
    spec = LogMelSpectrogram()
    x = torch.randn(4, 8000, generator=torch.Generator().manual_seed(0))
    batch = spec(x)
    for i in range(4):
        torch.testing.assert_close(batch[i], spec(x[i:i + 1])[0], atol=1e-4, rtol=0)
    assert spec(x[0]).shape == (128, 32)
    assert spec(x.reshape(2, 2, 8000)).shape == (2, 2, 128, 32)


def test_state_dict_buffers_follow_module():
    spec = LogMelSpectrogram()
    sd = spec.state_dict()
    assert set(sd) == {"fb", "window"}
    assert sd["fb"].shape == (257, 128) and sd["window"].shape == (512,)
    assert sd["fb"].dtype == torch.float32
    np.testing.assert_allclose(sd["window"].numpy(), 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512),
                               atol=1e-7)
    other = LogMelSpectrogram()
    other.load_state_dict(sd)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    ref = spec(x)
    for dev in devices:
        moved = LogMelSpectrogram().to(dev)
        assert moved.fb.device.type == dev
        torch.testing.assert_close(moved(x.to(dev)).cpu(), ref, atol=2e-3, rtol=0)
    # double-precision input/buffers still give float32 dB of the same values
    torch.testing.assert_close(LogMelSpectrogram().double()(x.double()), ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(f_min=9000.0, f_max=8000.0), dict(win_length=1024),
                                    dict(hop_length=0), dict(n_mels=0), dict(pad_mode="wrap"),
                                    dict(f_max=9000.0)])
def test_bad_parameters_raise_config_error(kwargs):
    with pytest.raises(ConfigError, match="LogMelSpectrogram"):
        LogMelSpectrogram(**kwargs)


def test_too_short_for_reflect_padding():
    with pytest.raises(ConfigError, match="pad_to"):
        LogMelSpectrogram()(torch.zeros(1, 100))
