"""Chunk placement and padding rules shared by training, evaluation and tagging."""

from __future__ import annotations

import numpy as np
import pytest

from focaltag.audio import CHUNK_SAMPLES, SAMPLE_RATE, WON2020_CHUNK_SAMPLES
from focaltag.audio.chunks import chunk_starts, pad_to
from focaltag.errors import DataError


def test_constants_match_the_papers():
    assert SAMPLE_RATE == 16000
    assert CHUNK_SAMPLES == 73600 and CHUNK_SAMPLES / SAMPLE_RATE == 4.6
    assert WON2020_CHUNK_SAMPLES == 3 ** 10


def test_chunk_starts_reference_hop():
    # 30 s track, 16 chunks: hop = (480000 - 73600) // 16 = 25400
    assert chunk_starts(480000, 73600, 16) == [25400 * i for i in range(16)]
    # 10 samples, chunk 4, 3 chunks: hop = 6 // 3 = 2
    assert chunk_starts(10, 4, 3) == [0, 2, 4]
    # hop rounds down: (11 - 4) // 3 = 2
    assert chunk_starts(11, 4, 3) == [0, 2, 4]


@pytest.mark.parametrize("n_samples", [0, 1000, 73600])
def test_short_tracks_all_chunks_at_zero(n_samples):
    assert chunk_starts(n_samples, 73600, 32) == [0] * 32


def test_chunks_stay_inside_the_track():
    for n in (73601, 100000, 5_000_000):
        starts = chunk_starts(n, 73600, 32)
        assert len(starts) == 32 and starts[-1] + 73600 <= n and starts == sorted(starts)


@pytest.mark.parametrize(("args", "match"), [((10, 0, 2), "chunk"), ((10, 4, 0), "n_chunks"), ((-1, 4, 2), "n_samples")])
def test_chunk_starts_bad_arguments(args, match):
    with pytest.raises(DataError, match=match):
        chunk_starts(*args)


def test_pad_to_zero_pads_at_the_end():
    x = np.arange(1, 4, dtype=np.float32)
    out = pad_to(x, 6)
    np.testing.assert_array_equal(out, [1, 2, 3, 0, 0, 0])
    assert out.dtype == np.float32
    assert pad_to(x, 3) is x and pad_to(x, 2) is x
    with pytest.raises(DataError, match="1-D"):
        pad_to(np.zeros((2, 2)), 5)
