"""Cache store internals: torn journals, leftover bytes after a crash, changed sources, sharding."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from focaltag.audio.cache import WaveformCache, prepare_cache, shard_of
from focaltag.audio.decode import load_audio
from focaltag.data.metadata import TrackRecord
from focaltag.errors import DataError


def _tracks(root: Path, n: int = 4) -> tuple[Path, list[TrackRecord]]:
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        sf.write(audio / f"{i}.flac", rng.uniform(-0.4, 0.4, 8000 + 1000 * i), 16000)
        out.append(TrackRecord(f"id{i}", f"{i}.flac", ("mood/theme---calm",), duration=0.5 + i / 16))
    return audio, out


def _f16(path: Path) -> np.ndarray:
    return load_audio(path).astype(np.float16).astype(np.float32)


def test_layout_and_journal_entries(tmp_path):
    audio, tracks = _tracks(tmp_path)
    summary = prepare_cache(tracks, audio, tmp_path / "c", workers=1, progress=False)
    assert (summary.tracks, summary.prepared, summary.failed, summary.bytes) == (4, 4, 0, 2 * sum(
        8000 + 1000 * i for i in range(4)))
    meta = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert meta["dtype"] == "float16" and meta["sample_rate"] == 16000
    lines = (tmp_path / "c" / "index-0of1-w00.jsonl").read_text().splitlines()
    entries = [json.loads(ln) for ln in lines]
    assert [e["length"] for e in entries] == [8000 + 1000 * i for i in (3, 2, 1, 0)]  # longest first
    assert [e["offset"] for e in entries] == [0, 11000, 21000, 30000]  # contiguous, in samples
    for e in entries:
        src = Path(e["source"]["path"])
        assert e["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert e["source"]["size"] == src.stat().st_size


def test_torn_journal_and_leftover_bytes_are_invisible_and_repaired(tmp_path):
    audio, tracks = _tracks(tmp_path)
    cache_dir = tmp_path / "c"
    prepare_cache(tracks[:2], audio, cache_dir, workers=1, progress=False)
    data, journal = cache_dir / "data-0of1-w00.bin", cache_dir / "index-0of1-w00.jsonl"
    committed = data.stat().st_size
    # simulate a crash in the middle of the next commit: samples written, journal line torn
    with data.open("ab") as fh:
        fh.write(np.ones(5000, np.float16).tobytes())
    with journal.open("ab") as fh:
        fh.write(b'{"id":"id2","file":"data-0of1-w00.bin","offset":' + str(committed // 2).encode())
    cache = WaveformCache(cache_dir)
    assert cache.track_ids == ("id0", "id1")
    # an entry whose samples never reached the disk is not shown either
    with journal.open("ab") as fh:
        fh.write(b',"length":999999}\n')
    assert WaveformCache(cache_dir).track_ids == ("id0", "id1")
    summary = prepare_cache(tracks, audio, cache_dir, workers=1, progress=False)
    assert (summary.skipped, summary.prepared) == (2, 2)
    assert data.stat().st_size == 2 * sum(8000 + 1000 * i for i in range(4))  # leftover bytes were cut
    cache = WaveformCache(cache_dir)
    for rec in tracks:
        np.testing.assert_array_equal(cache.get(rec.track_id), _f16(audio / rec.path))
    assert cache.verify() == []


def test_changed_source_is_decoded_again(tmp_path):
    audio, tracks = _tracks(tmp_path)
    cache_dir = tmp_path / "c"
    prepare_cache(tracks, audio, cache_dir, workers=1, progress=False)
    sf.write(audio / "1.flac", np.full(4000, 0.25), 16000)
    os.utime(audio / "1.flac", ns=(1, 1))  # a different mtime whatever the clock resolution
    summary = prepare_cache(tracks, audio, cache_dir, workers=1, progress=False)
    assert (summary.skipped, summary.prepared) == (3, 1)
    cache = WaveformCache(cache_dir)
    assert cache.length("id1") == 4000 and np.allclose(cache.get("id1"), 0.25, atol=1e-3)


def test_bit_rot_is_found_by_verify(tmp_path):
    audio, tracks = _tracks(tmp_path, 2)
    prepare_cache(tracks, audio, tmp_path / "c", workers=1, progress=False)
    data = tmp_path / "c" / "data-0of1-w00.bin"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF  # inside the first (longest) track, id1
    data.write_bytes(bytes(raw))
    assert WaveformCache(tmp_path / "c").verify() == ["id1"]


def test_shard_of_is_stable_and_balanced():
    ids = [f"track_{i:07d}" for i in range(2000)]
    shards = [shard_of(t, 4) for t in ids]
    assert shards == [shard_of(t, 4) for t in ids] and set(shards) == {0, 1, 2, 3}
    assert min(np.bincount(shards)) > 400
    assert all(shard_of(t, 1) == 0 for t in ids[:10])


def test_prepare_argument_errors(tmp_path):
    audio, tracks = _tracks(tmp_path, 1)
    with pytest.raises(DataError, match="shard"):
        prepare_cache(tracks, audio, tmp_path / "c", shard=(3, 2))
    with pytest.raises(DataError, match="workers"):
        prepare_cache(tracks, audio, tmp_path / "c", workers=0)
    with pytest.raises(DataError, match="audio-dir"):
        prepare_cache(tracks, tmp_path / "missing", tmp_path / "c")
    twice = [tracks[0], TrackRecord("id0", "other.flac", ("mood/theme---calm",))]
    with pytest.raises(DataError, match="two paths"):
        prepare_cache(twice, audio, tmp_path / "c")
