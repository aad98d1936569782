"""Adaptive chunking inside the Tagger: the chunks it averages, determinism, and the fixed protocol at the maximum."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from focaltag.errors import ConfigError
from focaltag.inference.adaptive import AdaptiveRule, ld_order
from focaltag.inference.chunking import plan_starts
from focaltag.inference.tagger import Tagger

SR = 16000
CHUNK = 1600
TAGS = ("mood/theme---a", "mood/theme---b", "mood/theme---c", "mood/theme---d")


class Levels(nn.Module):
    """Logits: four fixed levels plus ``noise`` times the chunk's mean (so chunks differ by a set spread)."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        self.noise = noise
        self.levels = nn.Parameter(torch.tensor([3.0, 1.0, -1.0, -3.0]))
        self.pretrained_cfg = SimpleNamespace(tag_names=TAGS, sample_rate=SR, chunk_samples=CHUNK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels + self.noise * x.mean(1, keepdim=True) * torch.tensor([1.0, -1.0, 1.0, -1.0])


def _wave(seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # piecewise-constant offsets: each chunk's mean differs
    blocks = rng.uniform(-1, 1, size=int(seconds))
    return np.repeat(blocks, SR).astype(np.float32) * 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_clear_track_stops_at_the_minimum_and_averages_those_chunks() -> None:
    wave = _wave()
    model = Levels(noise=0.05)
    result = Tagger(model, adaptive=True, workers=0, precision="fp32", top_k=3).tag(wave, sr=SR)
    assert result.chunks_used == 4 and result.chunks_planned == 16
    starts = plan_starts(len(wave), CHUNK, n_chunks=16)
    used = sorted(ld_order(16)[:4])  # 0, 4, 8, 12
    assert used == [0, 4, 8, 12]
    rows = [_sigmoid(np.array([3.0, 1.0, -1.0, -3.0]) + 0.05 * wave[starts[i]:starts[i] + CHUNK].mean()
                     * np.array([1.0, -1.0, 1.0, -1.0])) for i in used]
    np.testing.assert_allclose(result.as_array(), np.mean(rows, axis=0), atol=1e-6)
    np.testing.assert_allclose(result.chunk_times, np.asarray([starts[i] for i in used]) / SR)


def test_rule_that_never_stops_gives_the_fixed_protocol_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(path, _wave(seed=1), SR)
    model = Levels(noise=8.0)
    fixed = Tagger(model, workers=0, precision="fp32").tag(path)
    never = Tagger(model, adaptive=AdaptiveRule(z=1e9), workers=2, precision="fp32").tag(path)
    assert never.chunks_used == 16 == fixed.chunks_used
    np.testing.assert_allclose(never.as_array(), fixed.as_array(), atol=1e-6)


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (3, 1), (16, 2)])
def test_result_does_not_depend_on_batching_or_threads(tmp_path: Path, batch_size: int, workers: int) -> None:
    files = []
    for seed in range(4):
        files.append(tmp_path / f"{seed}.wav")
        sf.write(files[-1], _wave(seed=seed), SR)
    model = Levels(noise=3.0)
    ref = list(Tagger(model, adaptive=True, workers=0, batch_size=4, precision="fp32").tag_many(files))
    got = list(Tagger(model, adaptive=True, workers=workers, batch_size=batch_size, precision="fp32").tag_many(files))
    assert [r.chunks_used for r in got] == [r.chunks_used for r in ref]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a.as_array(), b.as_array(), atol=1e-6)
        assert 4 <= a.chunks_used <= 16


def test_adaptive_refuses_a_sliding_window() -> None:
    with pytest.raises(ConfigError, match="sliding window"):
        Tagger(Levels(0.1), adaptive=True, hop_seconds=0.5)
