"""Low-level layout of the waveform cache: format constants, journal reading, and the per-worker writer.

See :mod:`focaltag.audio.cache` for the layout and the crash-safety rules this module implements.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from pathlib import Path

import numpy as np

from focaltag._io import write_text
from focaltag._locks import try_lock
from focaltag.audio.decode import iter_audio_blocks
from focaltag.errors import AudioDecodeError, DataError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "focaltag-waveform-cache"
CACHE_VERSION = 1
CACHE_DTYPE = np.dtype("float16")
ITEMSIZE = CACHE_DTYPE.itemsize


def read_journal(path: Path) -> tuple[list[dict], int]:
    """Complete, parseable entries of one journal and the byte length they occupy (a torn tail is ignored)."""
    raw = path.read_bytes()
    entries: list[dict] = []
    good = 0
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break
        try:
            entry = json.loads(raw[pos:nl])
        except ValueError:
            break  # only the tail of the last (torn) write can be damaged; stop there
        if isinstance(entry, dict) and {"id", "file", "offset", "length"} <= entry.keys():
            entries.append(entry)
        pos = good = nl + 1
    return entries, good


def scan_index(cache_dir: Path) -> dict[str, dict]:
    """Merge every journal of the cache: track id -> newest committed entry whose data is on disk."""
    sizes: dict[str, int] = {}
    merged: dict[str, dict] = {}
    for journal in sorted(cache_dir.glob("index-*.jsonl")):
        for entry in read_journal(journal)[0]:
            fname = entry["file"]
            if fname not in sizes:
                data = cache_dir / fname
                sizes[fname] = data.stat().st_size if data.exists() else -1
            if (entry["offset"] + entry["length"]) * ITEMSIZE > sizes[fname]:
                logger.warning("cache %s: entry for %s points past the end of %s; ignored (rerun prepare)",
                               cache_dir, entry["id"], fname)
                continue
            old = merged.get(entry["id"])
            if old is None or entry.get("time", 0) >= old.get("time", 0):
                merged[entry["id"]] = entry
    return merged


def read_meta(cache_dir: Path) -> dict:
    meta_path = cache_dir / "cache.json"
    if not meta_path.is_file():
        raise DataError(f"{cache_dir} is not a focaltag waveform cache (no cache.json); build it with "
                        "'focaltag data prepare --tsv SPLIT.tsv --audio-dir DIR --cache DIR'")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        raise DataError(f"{meta_path}: not valid JSON; delete the cache folder and run prepare again") from None
    if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        raise DataError(f"{meta_path}: unsupported cache format {meta.get('format')!r} version "
                        f"{meta.get('version')!r}; expected {CACHE_FORMAT} v{CACHE_VERSION}, rebuild the cache")
    return meta


_W: dict = {}  # per-worker-process state: open data/journal files of this worker's slot


def acquire_slot(cache_dir: Path, tag: str) -> None:
    """Claim the first unlocked ``data-<tag>-w<K>.bin`` (its lock file ``data-<tag>-w<K>.lock``, held for the
    worker's life) and roll it back to its last committed byte."""
    k = 0
    while (lock := try_lock(cache_dir / f"data-{tag}-w{k:02d}.lock")) is None:
        k += 1
    name = f"data-{tag}-w{k:02d}"
    fd = os.open(cache_dir / f"{name}.bin", os.O_RDWR | os.O_CREAT, 0o644)
    journal_path = cache_dir / f"index-{name[5:]}.jsonl"
    journal_path.touch()
    entries, good = read_journal(journal_path)
    size = os.fstat(fd).st_size
    mine = [e for e in entries if e["file"] == f"{name}.bin"]
    valid = [e for e in mine if (e["offset"] + e["length"]) * ITEMSIZE <= size]
    if len(valid) < len(mine):  # not written by us (we fsync data first): drop them before the file regrows
        logger.warning("cache %s: dropping %d journal entries of %s that point past its end",
                       cache_dir, len(mine) - len(valid), name)
        write_text(journal_path, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in valid))
    else:
        os.truncate(journal_path, good)
    committed = max(((e["offset"] + e["length"]) * ITEMSIZE for e in valid), default=0)
    os.ftruncate(fd, committed)
    dir_fd = os.open(cache_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new files' names are durable before any entry refers to them
    finally:
        os.close(dir_fd)
    _W.update(data=os.fdopen(fd, "r+b", buffering=0), journal=open(journal_path, "ab", buffering=0),  # noqa: SIM115
              name=f"{name}.bin", end=committed, lock=lock)


def init_worker(cache_dir: str, tag: str) -> None:
    acquire_slot(Path(cache_dir), tag)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


Result = tuple[str, str, "str | None", float, float]  # (id, path, error or None, decode+resample wall, cpu s)


def _decode_into(job: tuple[str, str, int], start: int) -> tuple[dict | None, str | None, float, float]:
    """Append one track at byte ``start`` of this worker's data file; returns (entry, error, wall, cpu).

    ``wall``/``cpu`` are the seconds spent inside decode + resample (for the benchmark's overhead share).

    On failure the file is truncated back to ``start``. Nothing is committed here (see :func:`prepare_batch`).
    """
    track_id, path, sr = job
    data = _W["data"]
    t_dec = c_dec = 0.0
    try:
        st = os.stat(path) if os.path.exists(path) else None
        data.seek(start)
        n, crc = 0, 0
        blocks = iter_audio_blocks(path, sr, block_seconds=30.0)
        while True:
            td, cd = time.perf_counter(), time.process_time()
            block = next(blocks, None)
            t_dec += time.perf_counter() - td
            c_dec += time.process_time() - cd
            if block is None:
                break
            payload = block.astype(CACHE_DTYPE).tobytes()
            data.write(payload)
            crc = zlib.crc32(payload, crc)
            n += block.shape[0]
        entry = {"id": track_id, "file": _W["name"], "offset": start // ITEMSIZE, "length": n,
                 "source": {"path": path, "size": st.st_size if st else None,
                            "mtime_ns": st.st_mtime_ns if st else None, "sha256": _sha256(path)},
                 "crc32": crc}
        return entry, None, t_dec, c_dec
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the others; reported in failures.tsv
        os.ftruncate(data.fileno(), start)  # drop this track's uncommitted samples
        reason = str(err) if isinstance(err, AudioDecodeError) else f"{type(err).__name__}: {err}"
        return None, reason, t_dec, c_dec


def prepare_batch(jobs: list[tuple[str, str, int]]) -> list[Result]:
    """Decode a few tracks, then commit them together: fsync the data, append + fsync their journal lines.

    Group commit keeps the two fsyncs (~5 ms each here) off the per-track path; a kill before the commit
    loses only this batch's work, never exposes it.
    """
    pos = _W["end"]
    lines: list[bytes] = []
    results: list[Result] = []
    for job in jobs:
        entry, error, t_dec, c_dec = _decode_into(job, pos)
        results.append((job[0], job[1], error, t_dec, c_dec))
        if entry is not None:
            entry["time"] = time.time_ns()
            lines.append((json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8"))
            pos += entry["length"] * ITEMSIZE
    if lines:
        os.fsync(_W["data"].fileno())
        _W["journal"].write(b"".join(lines))
        os.fsync(_W["journal"].fileno())
        _W["end"] = pos
    return results


def release_slot() -> None:
    for key in ("data", "journal"):
        fh = _W.pop(key, None)
        if fh is not None:
            fh.close()
    _W.clear()
