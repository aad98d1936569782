"""Audio for calibrating reduced-precision models: generated here, never a user's files.

int8 quantization (:mod:`focaltag.inference.int8`) needs inputs whose activation ranges look like music's: the
log-mel front end sees harmonic notes with decaying envelopes, percussive low-frequency hits, broadband noise and
silence between phrases. This generator makes exactly that, deterministically from a seed, at the model's rate; it
is independent of the demo data set (:mod:`focaltag.data.synth`), whose job is to carry tag signatures.
"""

from __future__ import annotations

import numpy as np

from focaltag.models.meta import ModelMeta

__all__ = ["calibration_audio", "calibration_chunks", "CALIBRATION_TRACKS"]

CALIBRATION_TRACKS = 4
"""Generated tracks (two chunks each) that calibrate the activation ranges."""

_SEED = 20240


def calibration_audio(n_tracks: int, *, seconds: float, sample_rate: int, seed: int = _SEED) -> list[np.ndarray]:
    """``n_tracks`` mono float32 tracks of ``seconds`` at ``sample_rate``: notes, hits, noise and quiet passages."""
    tracks = []
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    nyquist = sample_rate / 2
    for k in range(n_tracks):
        rng = np.random.default_rng([seed, k])
        out = np.zeros(n)
        beat = 60.0 / rng.uniform(70, 160)
        root = 55.0 * 2 ** (rng.integers(0, 24) / 12)
        for start in np.arange(0.0, seconds, beat):
            i0, i1 = int(start * sample_rate), min(n, int((start + 2 * beat) * sample_rate))
            seg = t[i0:i1] - start
            envelope = np.exp(-seg * rng.uniform(1.0, 6.0))
            f0 = root * 2 ** (rng.choice([0, 3, 4, 7, 10, 12, 15, 19]) / 12)
            for h in range(1, 9):
                if f0 * h < 0.9 * nyquist:
                    out[i0:i1] += rng.uniform(0.02, 0.15) / h * envelope * np.sin(2 * np.pi * f0 * h * seg)
            hit = min(n, i0 + int(0.1 * sample_rate))
            out[i0:hit] += 0.3 * np.exp(-(t[i0:hit] - start) * 40) * np.sin(2 * np.pi * 55 * (t[i0:hit] - start))
        out += rng.uniform(0.005, 0.05) * rng.standard_normal(n)
        quiet = int(rng.uniform(0.5, 2.0) * sample_rate)
        q0 = int(rng.integers(0, max(1, n - quiet)))
        out[q0:q0 + quiet] *= 0.01
        tracks.append((out / max(1.0, float(np.abs(out).max()) / 0.9)).astype(np.float32))
    return tracks


def calibration_chunks(meta: ModelMeta, n_tracks: int = CALIBRATION_TRACKS) -> np.ndarray:
    """(2 * n_tracks, chunk_samples) float32 chunks of generated audio at the model's rate."""
    from focaltag.audio.chunks import chunk_starts, pad_to

    seconds = max(30.0, 2.2 * meta.chunk_samples / meta.sample_rate)
    tracks = calibration_audio(n_tracks, seconds=seconds, sample_rate=meta.sample_rate)
    return np.stack([pad_to(w[s:s + meta.chunk_samples], meta.chunk_samples)
                     for w in tracks for s in chunk_starts(len(w), meta.chunk_samples, 2)]).astype(np.float32)
