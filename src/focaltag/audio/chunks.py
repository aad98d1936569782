"""Chunks: where they start in a track, how short tracks are padded, and every way they are read.

The same rules serve training, evaluation and tagging; this module is the only place that reads chunks (from a
waveform, the training cache or an audio file, seeking and resampling as needed). ``inference`` and ``training``
only plan which starts they need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from focaltag.errors import AudioDecodeError, ConfigError, DataError

__all__ = ["chunk_starts", "pad_to", "cut_chunks", "cached_chunks", "eval_chunks", "read_file_chunks",
           "probe_file", "FileFacts", "ReadMethod", "READ_METHODS"]


def chunk_starts(n_samples: int, chunk: int, n_chunks: int) -> list[int]:
    """Start samples of ``n_chunks`` evenly spaced chunks, as the reference evaluation does.

    The reference uses ``hop = (n_samples - chunk) // n_chunks`` and starts ``i * hop`` for
    ``i in range(n_chunks)``; a track no longer than one chunk has ``hop = 0`` (every chunk starts at 0, on
    the zero-padded track, see :func:`pad_to`). Every chunk lies inside ``max(n_samples, chunk)`` samples.

    Args:
        n_samples (int): length of the track in samples.
        chunk (int): chunk length in samples.
        n_chunks (int): number of chunks.

    Returns:
        list[int]: ``n_chunks`` start offsets, non-decreasing.
    """
    if chunk < 1:
        raise DataError(f"chunk must be >= 1 sample, got chunk={chunk}")
    if n_chunks < 1:
        raise DataError(f"n_chunks must be >= 1, got n_chunks={n_chunks}")
    if n_samples < 0:
        raise DataError(f"n_samples must be >= 0, got n_samples={n_samples}")
    hop = max(n_samples - chunk, 0) // n_chunks
    return [i * hop for i in range(n_chunks)]


def pad_to(wave: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad a 1-D waveform at the end to at least ``n`` samples (longer waves are returned unchanged).

    Padding at the end with silence keeps the track's real start aligned with chunk 0, so a short track is
    seen the same way by training, evaluation and tagging.
    """
    if wave.ndim != 1:
        raise DataError(f"pad_to expects a 1-D waveform, got shape {tuple(wave.shape)}")
    if wave.shape[0] >= n:
        return wave
    out = np.zeros(n, dtype=wave.dtype)
    out[: wave.shape[0]] = wave
    return out


# --------------------------------------------------------------------------------------------- reading
# The one home of chunk reads: from a decoded waveform (cut_chunks), from the training cache (cached_chunks,
# eval_chunks: validation, ``focaltag predict``) and from an audio file (read_file_chunks: tagging). Callers in
# inference/ and training/ only plan the starts.

ReadMethod = Literal["auto", "seek", "stream", "whole"]
READ_METHODS: tuple[str, ...] = ("auto", "seek", "stream", "whole")
MARGIN_SECONDS = 0.1  # decoded either side of a seek read so resampler/decoder edge effects stay outside
MAX_GROUP_SECONDS = 60.0  # one seek read never spans more than this (bounds memory for dense windows)
STREAM_BLOCK_SECONDS = 10.0


@dataclass(frozen=True)
class FileFacts:
    """What chunk planning needs from a file's header (no decoding)."""

    n_samples: int  # length at the requested rate (soxr's ``round(frames * sr / sr_in)``)
    native_rate: int
    seekable: bool


def probe_file(path: str | os.PathLike[str], sample_rate: int) -> FileFacts:
    """Length at ``sample_rate``, native rate and seekability from the file header, without decoding.

    The length is ``len(load_audio(path, sample_rate))`` whenever the header's frame count is exact
    (WAV/FLAC/OGG; for MP3 it is the decoder's estimate).
    """
    from focaltag.audio.backends import open_reader

    fh = open_reader(Path(path))
    try:
        frames, rate, seekable = fh.frames, fh.samplerate, fh.seekable
    finally:
        fh.close()
    if frames <= 0 and seekable:
        raise AudioDecodeError(f"{path}: contains no audio samples; re-download or remove it")
    if frames <= 0:  # no length in the header (a raw stream): decode it to know
        from focaltag.audio.decode import load_audio

        return FileFacts(len(load_audio(path, sample_rate)), rate, False)
    return FileFacts(int(round(frames * sample_rate / rate)), rate, seekable)


def cut_chunks(wave: np.ndarray, starts: Sequence[int], chunk_samples: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, chunk)`` pairs cut from a decoded float32 waveform, zero-padded at the end where it is short."""
    for i, s in enumerate(starts):
        yield i, np.asarray(pad_to(wave[s:s + chunk_samples], chunk_samples), dtype=np.float32)


def cached_chunks(cache: Any, track_id: str, starts: Sequence[int], chunk_samples: int) -> np.ndarray:
    """Chunks ``(len(starts), chunk_samples)`` float32 of one track of a ``WaveformCache`` (zeros past its end)."""
    out = np.empty((len(starts), chunk_samples), dtype=np.float32)
    for i, s in enumerate(starts):
        out[i] = cache.read(track_id, int(s), chunk_samples)
    return out


def eval_chunks(cache: Any, track_id: str, chunk_samples: int, n_chunks: int) -> np.ndarray:
    """The ``n_chunks`` evaluation chunks of a cached track (validation, test and ``focaltag predict``).

    Positions are :func:`chunk_starts` of the track's length (the reference rule); a track shorter than a chunk
    gives ``n_chunks`` copies of its zero-padded self.
    """
    return cached_chunks(cache, track_id, chunk_starts(int(cache.length(track_id)), chunk_samples, n_chunks),
                         chunk_samples)


def read_file_chunks(path: str | os.PathLike[str], starts: Sequence[int], chunk_samples: int, *,
                     sample_rate: int, method: ReadMethod = "auto",
                     facts: FileFacts | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, chunk float32[chunk_samples])`` for every start, decoding only what is needed.

    Three readers give the same chunks (to resampler rounding, ~1e-6):

    * ``seek``: seek to each group of nearby chunks, decode it with a 0.1 s margin on both sides, resample, cut.
      Only the chunks' audio is decoded: 16 chunks of a 4-minute track are ~30% of it.
    * ``stream``: decode front to back in blocks and keep only the samples inside a chunk (unseekable files).
    * ``whole``: decode everything with ``load_audio``.

    ``auto`` seeks when the file can seek. ``facts`` (from :func:`probe_file`) saves a second header read.
    """
    if method not in READ_METHODS:
        raise ConfigError(f"read method must be one of {', '.join(READ_METHODS)}, got {method!r}")
    path = Path(path)
    if method == "whole":
        from focaltag.audio.decode import load_audio

        yield from cut_chunks(load_audio(path, sr=sample_rate), starts, chunk_samples)
        return
    if method == "seek" or (method == "auto" and (facts is None or (facts.seekable and facts.native_rate > 0))):
        native = facts.native_rate if facts is not None and facts.native_rate > 0 else \
            probe_file(path, sample_rate).native_rate
        yield from _seek_chunks(path, starts, chunk_samples, sample_rate, native)
        return
    yield from _stream_chunks(path, starts, chunk_samples, sample_rate)


def _groups(starts: Sequence[int], chunk_samples: int, sample_rate: int, margin: int) -> list[list[int]]:
    """Chunk indices grouped so that chunks closer than two margins are decoded in one read."""
    max_span = int(MAX_GROUP_SECONDS * sample_rate)
    groups: list[list[int]] = []
    g_start = g_end = 0
    for i in sorted(range(len(starts)), key=lambda i: starts[i]):
        s = starts[i]
        e = s + chunk_samples
        if groups and s - g_end <= 2 * margin and max(e, g_end) - g_start <= max_span:
            groups[-1].append(i)
            g_end = max(g_end, e)
        else:
            groups.append([i])
            g_start, g_end = s, e
    return groups


def _seek_chunks(path: Path, starts: Sequence[int], chunk_samples: int, sr: int,
                 native_sr: int) -> Iterator[tuple[int, np.ndarray]]:
    """Decode each group of chunks by seeking; the group start is aligned so resampling lines up exactly."""
    import soxr

    from focaltag.audio.backends import open_reader
    from focaltag.audio.decode import RESAMPLE_QUALITY

    g = math.gcd(native_sr, sr)
    a, b = native_sr // g, sr // g  # a native samples <-> b model samples, exactly
    margin = int(MARGIN_SECONDS * sr)
    fh = open_reader(path)
    try:
        for group in _groups(starts, chunk_samples, sr, margin):
            lo = min(starts[i] for i in group)
            hi = max(starts[i] for i in group) + chunk_samples
            q0 = (max(0, lo - margin) // b) * b  # model-rate start, on the exact rate grid
            q1 = hi + margin
            s0 = q0 // b * a
            n_native = int(math.ceil((q1 - q0) * a / b))
            if s0 < fh.frames:
                fh.seek(s0)
                data = fh.read(n_native)
            else:
                data = None
            if data is None or len(data) == 0:
                seg = np.zeros(0, dtype=np.float32)
            elif not np.isfinite(data).all():
                raise AudioDecodeError(f"{path}: decoded samples near {q0 / sr:.1f} s contain NaN or infinity; "
                                       "the file is corrupt")
            else:
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                seg = mono if native_sr == sr else soxr.resample(
                    mono, native_sr, sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
            for i in group:
                off = starts[i] - q0
                yield i, np.asarray(pad_to(seg[off:off + chunk_samples], chunk_samples), dtype=np.float32)
    finally:
        fh.close()


def _stream_chunks(path: Path, starts: Sequence[int], chunk_samples: int,
                   sr: int) -> Iterator[tuple[int, np.ndarray]]:
    """Decode front to back in blocks, holding only the samples from the oldest unfinished chunk on."""
    from focaltag.audio.decode import iter_audio_blocks

    order = sorted(range(len(starts)), key=lambda i: starts[i])
    pos = 0  # model-rate sample index of buf[0]
    buf = np.zeros(0, dtype=np.float32)
    k = 0  # next chunk (in ``order``) to complete
    for block in iter_audio_blocks(path, sr=sr, block_seconds=STREAM_BLOCK_SECONDS):
        if k >= len(order):
            break
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32)])
        while k < len(order) and starts[order[k]] + chunk_samples <= pos + len(buf):
            off = starts[order[k]] - pos
            yield order[k], buf[off:off + chunk_samples].copy()
            k += 1
        drop = min(starts[order[k]] - pos, len(buf)) if k < len(order) else len(buf)
        if drop > 0:  # samples before the next chunk (possibly the whole buffer, for sparse chunks) go
            buf = buf[drop:]
            pos += drop
    for i in order[k:]:  # the file ended early (header length was an estimate): pad
        off = max(starts[i] - pos, 0)
        yield i, np.asarray(pad_to(buf[off:off + chunk_samples], chunk_samples), dtype=np.float32)
