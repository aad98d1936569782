"""Crash-safe, resumable store of 16 kHz float16 waveforms for training (``focaltag data prepare``).

Layout of a cache folder::

    cache.json                       format, dtype, sample rate, resampler (written once)
    data-<I>of<N>-w<K>.bin           raw float16 samples, append-only, one file per (shard, worker slot)
    index-<I>of<N>-w<K>.jsonl        journal: one JSON line per finished track (id, file, offset, length,
                                     source size/mtime/sha256, crc32 of the stored bytes, time)
    failures.tsv                     tracks that could not be decoded (track id, path, reason; fields escaped as focaltag._paths), latest run
                                     (``failures-<I>of<N>.tsv`` for a sharded run)
    summary.json                     the latest run's summary (``summary-<I>of<N>.json`` if sharded)

A track's samples are contiguous, so a random chunk is one slice of a memory map. Crash safety: a worker
appends the samples of a few tracks (about 60 s of audio: group commit, fsync costs ~5 ms), fsyncs the data
file, and only then appends (and fsyncs) their journal lines; the reader ignores a torn last line and entries
past the data file's end, so a killed run never exposes a partial track. On restart a worker truncates its data file back to the last committed byte, and tracks already in
any journal (same source size and mtime) are skipped. Each worker holds the lock file of its data file
(``data-*.lock``, :mod:`focaltag._locks`), so
concurrent runs (cluster array jobs, ``--shard I/N``) never share a file.

Why float16 rather than int16: int16's quantisation noise is white at a fixed level and swamps quiet mel bins
(fades, the band above an MP3's low-pass), which the log-mel front end weighs as much as loud ones; float16's error
is relative to each sample, needs no clipping (decoded MP3s overshoot 1.0), and costs the same 2 bytes per sample
(the measured log-mel errors are in the README, "training cache" row).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from focaltag._io import write_json, write_text
from focaltag._paths import escape_path
from focaltag._progress import progress as _progress_bar
from focaltag.audio._store import (
    CACHE_DTYPE,
    CACHE_FORMAT,
    CACHE_VERSION,
    Result,
    acquire_slot,
    init_worker,
    prepare_batch,
    read_meta,
    release_slot,
    scan_index,
)
from focaltag.audio.decode import RESAMPLE_QUALITY
from focaltag.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["WaveformCache", "prepare_cache", "PrepareSummary", "shard_of", "CACHE_DTYPE"]


def shard_of(track_id: str, n_shards: int) -> int:
    """Stable shard of a track id (sha1-based: independent of list order and of Python's hash seed)."""
    return int.from_bytes(hashlib.sha1(track_id.encode("utf-8")).digest()[:8], "big") % n_shards


def _shard_tag(shard: tuple[int, int]) -> str:
    return f"{shard[0]}of{shard[1]}"


class WaveformCache:
    """Read-only view of a prepared cache: each data file is memory-mapped once, lazily, per process.

    Safe to hand to DataLoader workers (fork or spawn): memory maps are dropped on pickling and reopened in the
    worker on first use. ``get``/``read`` return float32 copies; ``raw`` returns the float16 memmap slice.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"cache folder not found: {self.path}; build it with 'focaltag data prepare'")
        meta = read_meta(self.path)
        self.sample_rate = int(meta["sample_rate"])
        self.dtype = np.dtype(meta["dtype"])
        index = scan_index(self.path)
        self._ids: tuple[str, ...] = tuple(sorted(index))
        self._files: list[str] = sorted({e["file"] for e in index.values()})
        file_no = {f: i for i, f in enumerate(self._files)}
        self._row = {tid: i for i, tid in enumerate(self._ids)}
        self._file = np.array([file_no[index[t]["file"]] for t in self._ids], dtype=np.int32)
        self._offset = np.array([index[t]["offset"] for t in self._ids], dtype=np.int64)
        self._length = np.array([index[t]["length"] for t in self._ids], dtype=np.int64)
        self._crc = [index[t].get("crc32") for t in self._ids]
        self._maps: dict[int, np.memmap] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"WaveformCache({str(self.path)!r}, {len(self)} tracks, {self.hours:.2f} h)"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._row

    @property
    def track_ids(self) -> tuple[str, ...]:
        """Cached track ids, sorted."""
        return self._ids

    @property
    def hours(self) -> float:
        return float(self._length.sum()) / self.sample_rate / 3600.0

    @property
    def nbytes(self) -> int:
        """Bytes of all data files on disk (including superseded entries)."""
        return sum((self.path / f).stat().st_size for f in self._files)

    def _where(self, track_id: str) -> int:
        row = self._row.get(track_id)
        if row is None:
            raise DataError(f"track {track_id!r} is not in the cache {self.path}; run 'focaltag data prepare' "
                            "with a TSV that lists it")
        return row

    def _map(self, file_no: int) -> np.memmap:
        if self._pid != os.getpid():  # forked after maps were opened: reopen in this process
            self._maps, self._pid = {}, os.getpid()
        mm = self._maps.get(file_no)
        if mm is None:
            mm = np.memmap(self.path / self._files[file_no], dtype=self.dtype, mode="r")
            self._maps[file_no] = mm
        return mm

    def length(self, track_id: str) -> int:
        """Number of samples of a track at ``sample_rate``."""
        return int(self._length[self._where(track_id)])

    def raw(self, track_id: str) -> np.ndarray:
        """The stored float16 samples (a read-only memmap slice, no copy)."""
        row = self._where(track_id)
        off = int(self._offset[row])
        return self._map(int(self._file[row]))[off:off + int(self._length[row])]

    def get(self, track_id: str) -> np.ndarray:
        """The whole track as float32 (a copy)."""
        return self.raw(track_id).astype(np.float32)

    def read(self, track_id: str, start: int, n: int) -> np.ndarray:
        """``n`` float32 samples from ``start``; samples past the track's end are zeros (as ``pad_to``)."""
        row = self._where(track_id)
        length = int(self._length[row])
        if start < 0 or n < 0:
            raise DataError(f"read({track_id!r}, start={start}, n={n}): start and n must be >= 0")
        off = int(self._offset[row])
        stop = min(start + n, length)
        out = np.zeros(n, dtype=np.float32)
        if stop > start:
            out[: stop - start] = self._map(int(self._file[row]))[off + start:off + stop]
        return out

    def verify(self, track_ids: Iterable[str] | None = None) -> list[str]:
        """Track ids whose stored bytes no longer match their crc32 (bit rot, manual edits)."""
        bad = []
        for tid in self._ids if track_ids is None else track_ids:
            crc = self._crc[self._where(tid)]
            if crc is not None and zlib.crc32(self.raw(tid).tobytes()) != crc:
                bad.append(tid)
        return bad


# --------------------------------------------------------------------------------------------- building


@dataclass
class PrepareSummary:
    """What a ``prepare_cache`` run did (also written to ``summary.json``, ``summary-<I>of<N>.json`` if sharded)."""

    cache_dir: str
    shard: tuple[int, int]
    tracks: int
    prepared: int
    skipped: int
    failed: int
    hours: float
    bytes: int
    seconds: float
    decode_seconds: float
    decode_cpu_seconds: float
    workers: int
    failures_file: str | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(todo: list[str], seconds: dict[str, float], *, target_s: float = 60.0,
             max_tracks: int = 32) -> list[list[str]]:
    """Group consecutive tracks into commits of about ``target_s`` seconds of audio (unknown length: 30 s)."""
    out: list[list[str]] = []
    cur: list[str] = []
    acc = 0.0
    for tid in todo:
        cur.append(tid)
        acc += seconds.get(tid) or 30.0
        if acc >= target_s or len(cur) >= max_tracks:
            out.append(cur)
            cur, acc = [], 0.0
    if cur:
        out.append(cur)
    return out


def _unique_tracks(tracks: Sequence, audio_dir: Path) -> dict[str, str]:
    """track id -> absolute audio path; the same id with two different paths is an error."""
    out: dict[str, str] = {}
    for rec in tracks:
        path = os.path.abspath(audio_dir / rec.path)
        low = "{}.low{}".format(*os.path.splitext(path))  # audio-low archives name NN/ID.mp3 NN/ID.low.mp3
        if not os.path.isfile(path) and os.path.isfile(low):
            path = low
        if out.setdefault(rec.track_id, path) != path:
            raise DataError(f"track {rec.track_id!r} is listed with two paths ({out[rec.track_id]} and {path}); "
                            "fix the TSVs so each id has one audio file")
    return out


def _ensure_meta(cache_dir: Path, sample_rate: int) -> None:
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "dtype": CACHE_DTYPE.name,
            "sample_rate": sample_rate, "resampler": f"soxr {RESAMPLE_QUALITY}", "downmix": "mean"}
    if (cache_dir / "cache.json").is_file():
        old = read_meta(cache_dir)
        if old.get("sample_rate") != sample_rate or old.get("dtype") != CACHE_DTYPE.name:
            raise DataError(f"{cache_dir} holds {old.get('dtype')} audio at {old.get('sample_rate')} Hz, not "
                            f"{CACHE_DTYPE.name} at {sample_rate} Hz; use another --cache folder")
        return
    write_json(cache_dir / "cache.json", meta)


BatchRunner = Callable[[Path, str, Sequence[list[tuple[str, str, int]]]], Iterator[list[Result]]]
"""Runs ``prepare_batch`` over batches elsewhere (``focaltag.ray.ray_batch_runner``: Ray tasks), given the cache
folder, the shard tag and the batches; yields each batch's results as it finishes."""


def prepare_cache(tracks: Sequence, audio_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str], *,
                  workers: int | None = None, shard: tuple[int, int] = (0, 1), progress: bool = True,
                  sample_rate: int = 16000, runner: BatchRunner | None = None) -> PrepareSummary:
    """Decode every track of this shard once into the cache; resumable, parallel over processes.

    Args:
        tracks (Sequence[TrackRecord]): tracks to cache (``track_id`` and ``path`` relative to ``audio_dir``).
        audio_dir (path): folder the track paths are relative to.
        cache_dir (path): cache folder (created; an existing cache is continued).
        workers (int or None, optional): decoding processes. (Default: ``None`` = CPU count)
        shard (tuple[int, int], optional): ``(I, N)``: only tracks with ``shard_of(id, N) == I``.
            (Default: ``(0, 1)`` = all)
        progress (bool, optional): show a progress bar (still silenced by ``--quiet``). (Default: ``True``)
        sample_rate (int, optional): stored sample rate. (Default: ``16000``)
        runner (BatchRunner or None, optional): where the batches are decoded instead of local processes (the
            same batches and writer; ``workers`` is then only reported). (Default: ``None`` = local)

    Returns:
        PrepareSummary: counts, hours, bytes, timings and the failures (also in ``failures.tsv``).
    """
    i_shard, n_shards = shard
    if n_shards < 1 or not 0 <= i_shard < n_shards:
        raise DataError(f"shard must be (I, N) with 0 <= I < N, got {shard}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise DataError(f"workers must be >= 1, got workers={workers}")
    audio_dir, cache_dir = Path(audio_dir), Path(cache_dir)
    if not audio_dir.is_dir():
        raise DataError(f"--audio-dir {audio_dir} is not a folder; pass the folder the TSV paths are relative to")
    t_start = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _ensure_meta(cache_dir, sample_rate)
    wanted = {tid: p for tid, p in _unique_tracks(tracks, audio_dir).items() if shard_of(tid, n_shards) == i_shard}
    done = scan_index(cache_dir)
    todo = [tid for tid, p in wanted.items() if not _is_current(done.get(tid), p)]
    durations = {r.track_id: r.duration or 0.0 for r in tracks}
    todo.sort(key=lambda t: -durations.get(t, 0.0))  # longest first: fewer idle workers at the end
    workers = max(1, min(workers, len(todo)))
    tag = _shard_tag(shard)
    failures: list[tuple[str, str, str]] = []
    t_dec = np.zeros(2)  # decode + resample: wall, cpu seconds
    logger.info("prepare: %d tracks in shard %s, %d already cached, %d to decode with %d workers",
                len(wanted), tag, len(wanted) - len(todo), len(todo), workers)
    bar = _progress_bar(total=len(todo), desc="preparing cache", unit="track", disable=None if progress else True)
    batches = [[(tid, wanted[tid], sample_rate) for tid in batch] for batch in _batches(todo, durations)]
    try:
        if todo and runner is not None:
            for results in runner(cache_dir, tag, batches):
                t_dec += _collect(results, failures, bar)
        elif todo and workers == 1:
            acquire_slot(cache_dir, tag)
            try:
                for batch in batches:
                    t_dec += _collect(prepare_batch(batch), failures, bar)
            finally:
                release_slot()
        elif todo:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(str(cache_dir), tag))
            try:
                futures = [pool.submit(prepare_batch, batch) for batch in batches]
                for fut in as_completed(futures):
                    t_dec += _collect(fut.result(), failures, bar)
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                raise DataError(f"a decoding worker died (out of memory or killed) while preparing {cache_dir}; "
                                "rerun the same command to continue, finished tracks are kept") from None
            except BaseException:  # Ctrl-C: stop now instead of draining the queue; finished work is kept
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        bar.close()
    failures.sort()
    fail_name = "failures.tsv" if n_shards == 1 else f"failures-{tag}.tsv"
    write_text(cache_dir / fail_name, "track_id\tpath\treason\n" + "".join(
        "\t".join(escape_path(s) for s in row) + "\n" for row in failures))  # any path, losslessly
    index = scan_index(cache_dir)
    cached = [index[t] for t in wanted if t in index]
    summary = PrepareSummary(
        cache_dir=str(cache_dir), shard=(i_shard, n_shards), tracks=len(wanted),
        prepared=len(todo) - len(failures), skipped=len(wanted) - len(todo), failed=len(failures),
        hours=round(sum(e["length"] for e in cached) / sample_rate / 3600.0, 4),
        bytes=sum(f.stat().st_size for f in cache_dir.glob("data-*.bin")),
        seconds=round(time.perf_counter() - t_start, 3), decode_seconds=round(float(t_dec[0]), 3),
        decode_cpu_seconds=round(float(t_dec[1]), 3), workers=workers,
        failures_file=str(cache_dir / fail_name), failures=failures)
    write_json(cache_dir / ("summary.json" if n_shards == 1 else f"summary-{tag}.json"), summary.to_dict())
    return summary


def _is_current(entry: dict | None, path: str) -> bool:
    """A cached entry is reused when its source file still has the same size and mtime (or is gone)."""
    if entry is None:
        return False
    src = entry.get("source", {})
    try:
        st = os.stat(path)
    except OSError:
        return True  # the audio was removed after caching: keep what we have
    return src.get("size") == st.st_size and src.get("mtime_ns") == st.st_mtime_ns


def _collect(results: list[Result], failures: list, bar) -> np.ndarray:
    t_dec = np.zeros(2)
    for track_id, path, error, t, c in results:
        t_dec += (t, c)
        if error is not None:
            failures.append((track_id, path, error))
            logger.warning("skipped %s: %s", track_id, error)
    bar.update(len(results))
    return t_dec

