"""WaveformCache reader and the training/evaluation chunk datasets, including DataLoader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from focaltag.audio.cache import WaveformCache, prepare_cache
from focaltag.audio.chunks import chunk_starts, pad_to
from focaltag.audio.decode import load_audio
from focaltag.data.metadata import TagVocabulary, TrackRecord
from focaltag.data.torch_dataset import EvalChunkDataset, TrainChunkDataset
from focaltag.errors import DataError

TAGS = ("mood/theme---calm", "mood/theme---happy", "mood/theme---sad")
SECONDS = (1.0, 3.0, 5.5, 7.0, 2.5, 6.0)  # the 1.0 s track is shorter than the 2 s test chunk
CHUNK = 32000


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory) -> tuple[Path, Path, list[TrackRecord]]:
    root = tmp_path_factory.mktemp("cache-small")
    audio = root / "audio"
    (audio / "00").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tracks = []
    for i, secs in enumerate(SECONDS):
        rel = f"00/{i}.wav"
        sf.write(audio / rel, rng.uniform(-0.5, 0.5, (int(secs * 22050), 2)), 22050, subtype="FLOAT")
        tracks.append(TrackRecord(f"t{i}", rel, (TAGS[i % 3],) if i % 2 else (TAGS[0], TAGS[2])))
    summary = prepare_cache(tracks, audio, root / "cache", workers=1, progress=False)
    assert summary.prepared == len(SECONDS) and summary.failed == 0
    return root / "cache", audio, tracks


def test_cache_reader_matches_decoder(small_cache):
    cache_dir, audio, tracks = small_cache
    cache = WaveformCache(cache_dir)
    assert cache.track_ids == tuple(sorted(r.track_id for r in tracks)) and len(cache) == len(tracks)
    assert "t0" in cache and "nope" not in cache
    assert cache.sample_rate == 16000 and cache.dtype == np.float16
    for rec, secs in zip(tracks, SECONDS, strict=True):
        expected = load_audio(audio / rec.path).astype(np.float16).astype(np.float32)
        assert cache.length(rec.track_id) == round(secs * 16000)
        np.testing.assert_array_equal(cache.get(rec.track_id), expected)
        assert cache.raw(rec.track_id).dtype == np.float16
    tail = cache.read("t0", 15000, 3000)  # t0 has 16000 samples: 1000 real, 2000 zero
    np.testing.assert_array_equal(tail[:1000], cache.get("t0")[15000:])
    assert not tail[1000:].any() and tail.dtype == np.float32
    assert cache.verify() == []
    assert abs(cache.hours - sum(SECONDS) / 3600) < 1e-6
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.get("t3"), cache.get("t3"))


def test_cache_reader_errors(small_cache, tmp_path):
    cache = WaveformCache(small_cache[0])
    with pytest.raises(DataError, match="not in the cache"):
        cache.get("missing-id")
    with pytest.raises(DataError, match="start"):
        cache.read("t1", -5, 10)
    with pytest.raises(DataError, match="not found"):
        WaveformCache(tmp_path / "nowhere")
    with pytest.raises(DataError, match="cache.json"):
        WaveformCache(tmp_path)


def test_train_dataset_chunks_are_reproducible_slices(small_cache):
    cache_dir, _, tracks = small_cache
    vocab = TagVocabulary(TAGS)
    ds = TrainChunkDataset(cache_dir, tracks, vocab, CHUNK, seed=7)
    cache = ds.cache
    assert len(ds) == len(tracks)
    for i, rec in enumerate(tracks):
        x, y = ds[i]
        assert x.shape == (CHUNK,) and x.dtype == torch.float32 and y.shape == (3,) and y.dtype == torch.float32
        assert y.tolist() == vocab.encode([rec])[0].astype(float).tolist()
        full = pad_to(cache.get(rec.track_id), CHUNK)
        start = ds.chunk_start(i)
        assert 0 <= start <= max(len(full) - CHUNK, 0)
        np.testing.assert_array_equal(x.numpy(), full[start:start + CHUNK])
        torch.testing.assert_close(ds[i][0], x)  # same (seed, epoch, index) -> same chunk
    short, _ = ds[0]
    assert ds.chunk_start(0) == 0 and not short[16000:].any()  # 1 s track: zero-padded at the end
    starts0 = [ds.chunk_start(i, 0) for i in range(len(ds))]
    starts1 = [ds.chunk_start(i, 1) for i in range(len(ds))]
    assert starts0 != starts1
    other_seed = TrainChunkDataset(cache_dir, tracks, vocab, CHUNK, seed=8)
    assert [other_seed.chunk_start(i) for i in range(len(ds))] != starts0


def _epoch_batches(loader: DataLoader) -> torch.Tensor:
    return torch.cat([x for x, _ in loader])


def test_train_dataset_with_dataloader_workers(small_cache):
    cache_dir, _, tracks = small_cache
    ds = TrainChunkDataset(WaveformCache(cache_dir), tracks, TagVocabulary(TAGS), CHUNK, seed=3)
    serial = _epoch_batches(DataLoader(ds, batch_size=2, num_workers=0))
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    torch.testing.assert_close(_epoch_batches(loader), serial, atol=0, rtol=0)
    ds.set_epoch(1)  # persistent workers see the new epoch through shared memory
    parallel1 = _epoch_batches(loader)
    expected1 = torch.stack([torch.from_numpy(ds.cache.read(r.track_id, ds.chunk_start(i, 1), CHUNK))
                             for i, r in enumerate(tracks)])
    torch.testing.assert_close(parallel1, expected1, atol=0, rtol=0)
    assert not torch.equal(parallel1, serial)


def test_eval_dataset_evenly_spaced_chunks(small_cache):
    cache_dir, _, tracks = small_cache
    ds = EvalChunkDataset(cache_dir, tracks, TagVocabulary(TAGS), CHUNK, n_chunks=4)
    for i, rec in enumerate(tracks):
        chunks, target = ds[i]
        assert chunks.shape == (4, CHUNK) and target.shape == (3,)
        full = pad_to(ds.cache.get(rec.track_id), CHUNK)
        for c, s in zip(chunks, chunk_starts(ds.cache.length(rec.track_id), CHUNK, 4), strict=True):
            np.testing.assert_array_equal(c.numpy(), full[s:s + CHUNK])
    short, _ = ds[0]
    assert all(torch.equal(short[0], c) for c in short)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert [b[0].shape for b in batches] == [(3, 4, CHUNK), (3, 4, CHUNK)]
    torch.testing.assert_close(batches[1][0][0], ds[3][0], atol=0, rtol=0)


def test_dataset_input_errors(small_cache):
    cache_dir, _, tracks = small_cache
    vocab = TagVocabulary(TAGS)
    with pytest.raises(DataError, match="not in the cache"):
        TrainChunkDataset(cache_dir, [*tracks, TrackRecord("ghost", "x.mp3", (TAGS[0],))], vocab, CHUNK)
    with pytest.raises(DataError, match="chunk_samples"):
        EvalChunkDataset(cache_dir, tracks, vocab, 0)
    with pytest.raises(DataError, match="n_chunks"):
        EvalChunkDataset(cache_dir, tracks, vocab, CHUNK, n_chunks=0)
    with pytest.raises(DataError, match="vocabulary"):
        TrainChunkDataset(cache_dir, tracks, TagVocabulary(TAGS[:1]), CHUNK)
    assert len(TrainChunkDataset(cache_dir, tracks, TagVocabulary(TAGS[:1]), CHUNK, unknown_tags="ignore")) == 6
