"""Where a track's chunks lie and how to read only those samples (a long file is never decoded whole).

Three readers give the same chunks (to resampler rounding, ~1e-6):

* ``seek``: seek to each group of nearby chunks in the original file, decode it with a 0.1 s margin on both
  sides, resample, cut. Only the chunks' audio is decoded: 16 chunks of a 4-minute track are ~30% of it.
* ``stream``: decode the file front to back in blocks (``iter_audio_blocks``) and keep only the samples that
  fall inside a chunk. Used when the file cannot seek.
* ``whole``: decode everything with ``load_audio`` (in-memory waveforms, or when nothing else works).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from focaltag.errors import AudioDecodeError, ConfigError

__all__ = ["ChunkPlan", "plan_starts", "plan_file", "iter_chunks", "chunks_from_waveform", "ReadMethod"]

logger = logging.getLogger(__name__)

ReadMethod = Literal["auto", "seek", "stream", "whole"]
MARGIN_SECONDS = 0.1  # decoded either side of a seek read so resampler/decoder edge effects stay outside
MAX_GROUP_SECONDS = 60.0  # one seek read never spans more than this (bounds memory for dense windows)
STREAM_BLOCK_SECONDS = 10.0


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks to cut from one track, in samples at the model's rate."""

    source: str
    sample_rate: int
    n_samples: int
    chunk_samples: int
    starts: tuple[int, ...]
    native_rate: int = 0  # the file's own rate (0: unknown / in-memory)
    seekable: bool = False

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def n_chunks(self) -> int:
        return len(self.starts)

    @property
    def times(self) -> np.ndarray:
        """Start time of each chunk in seconds."""
        return np.asarray(self.starts, dtype=np.float64) / self.sample_rate


def plan_starts(n_samples: int, chunk_samples: int, *, n_chunks: int = 16,
                hop_samples: int | None = None) -> list[int]:
    """Chunk start offsets covering a track: N evenly spaced (as in training) or a sliding window.

    A track shorter than one chunk gets a single chunk at 0 (padded with zeros at the end when read).
    The sliding window adds a last chunk flush with the end so the tail is covered too.
    """
    if chunk_samples < 1:
        raise ConfigError(f"chunk_samples must be >= 1, got {chunk_samples}")
    if n_samples <= chunk_samples:
        return [0]
    if hop_samples is not None:
        if hop_samples < 1:
            raise ConfigError(f"hop must be positive, got {hop_samples} samples")
        last = n_samples - chunk_samples
        starts = list(range(0, last + 1, hop_samples))
        if starts[-1] != last:
            starts.append(last)
        return starts
    if n_chunks < 1:
        raise ConfigError(f"n_chunks must be >= 1, got {n_chunks}")
    from focaltag.audio.chunks import chunk_starts

    # identical starts (hop 0 for a track of exactly one chunk) give identical chunks: compute each once
    return list(dict.fromkeys(int(s) for s in chunk_starts(n_samples, chunk_samples, n_chunks)))


def _file_info(path: Path, sample_rate: int) -> tuple[int, int, bool]:
    """(length at ``sample_rate``, native rate, seekable) from the file header, without decoding.

    The length is soxr's (``round(frames * sr / sr_in)``), i.e. ``len(load_audio(path, sr))`` whenever the
    header's frame count is exact (WAV/FLAC/OGG; for MP3 it is the decoder's estimate).
    """
    from focaltag.audio.decode import audio_info

    info = audio_info(path)
    if info.frames <= 0:
        raise AudioDecodeError(f"{path}: contains no audio samples; re-download or remove it")
    n = int(round(info.frames * sample_rate / info.sample_rate))
    seekable = info.frames < 2**62  # libsndfile reports a huge frame count for unseekable streams
    return n, int(info.sample_rate), seekable


def _reason(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def plan_file(path: str | os.PathLike[str], *, sample_rate: int, chunk_samples: int, n_chunks: int = 16,
              hop_samples: int | None = None) -> ChunkPlan:
    """Plan a file's chunks from its header (duration) alone."""
    path = Path(path)
    n, native_sr, seekable = _file_info(path, sample_rate)
    starts = plan_starts(n, chunk_samples, n_chunks=n_chunks, hop_samples=hop_samples)
    return ChunkPlan(str(path), sample_rate, n, chunk_samples, tuple(starts), native_sr, seekable)


def _pad(wave: np.ndarray, n: int) -> np.ndarray:
    from focaltag.audio.chunks import pad_to

    return np.asarray(pad_to(wave, n), dtype=np.float32)


def chunks_from_waveform(wave: np.ndarray, starts: Sequence[int], chunk_samples: int) -> Iterator[
        tuple[int, np.ndarray]]:
    """Cut (index, chunk) pairs from a decoded waveform (zero-padded at the end where it is short)."""
    for i, s in enumerate(starts):
        yield i, _pad(wave[s:s + chunk_samples], chunk_samples)


def iter_chunks(plan: ChunkPlan, *, method: ReadMethod = "auto") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, chunk float32[chunk_samples])`` for every start of ``plan``, reading only what is needed."""
    path = Path(plan.source)
    if method == "whole":
        yield from _whole_chunks(path, plan)
        return
    if method == "seek" or (method == "auto" and plan.seekable and plan.native_rate > 0):
        native_sr = plan.native_rate or _file_info(path, plan.sample_rate)[1]
        yield from _seek_chunks(path, plan, native_sr)
        return
    yield from _stream_chunks(path, plan)


def _whole_chunks(path: Path, plan: ChunkPlan) -> Iterator[tuple[int, np.ndarray]]:
    from focaltag.audio.decode import load_audio

    wave = load_audio(path, sr=plan.sample_rate)
    yield from chunks_from_waveform(wave, plan.starts, plan.chunk_samples)


def _groups(plan: ChunkPlan, margin: int) -> list[list[int]]:
    """Chunk indices grouped so that chunks closer than two margins are decoded in one read."""
    max_span = int(MAX_GROUP_SECONDS * plan.sample_rate)
    order = sorted(range(plan.n_chunks), key=lambda i: plan.starts[i])
    groups: list[list[int]] = []
    g_start = g_end = 0
    for i in order:
        s = plan.starts[i]
        e = s + plan.chunk_samples
        if groups and s - g_end <= 2 * margin and max(e, g_end) - g_start <= max_span:
            groups[-1].append(i)
            g_end = max(g_end, e)
        else:
            groups.append([i])
            g_start, g_end = s, e
    return groups


def _seek_chunks(path: Path, plan: ChunkPlan, native_sr: int) -> Iterator[tuple[int, np.ndarray]]:
    """Decode each group of chunks by seeking; the group start is aligned so resampling lines up exactly."""
    import soundfile as sf
    import soxr

    from focaltag.audio.decode import RESAMPLE_QUALITY

    sr = plan.sample_rate
    g = math.gcd(native_sr, sr)
    a, b = native_sr // g, sr // g  # a native samples <-> b model samples, exactly
    margin = int(MARGIN_SECONDS * sr)
    try:
        fh = sf.SoundFile(str(path))
    except Exception as err:
        raise AudioDecodeError(f"cannot read audio file {path}: {_reason(err)}") from None
    with fh:
        for group in _groups(plan, margin):
            lo = min(plan.starts[i] for i in group)
            hi = max(plan.starts[i] for i in group) + plan.chunk_samples
            q0 = (max(0, lo - margin) // b) * b  # model-rate start, on the exact rate grid
            q1 = hi + margin
            s0 = q0 // b * a
            n_native = int(math.ceil((q1 - q0) * a / b))
            try:
                fh.seek(min(s0, max(fh.frames - 1, 0)))
                data = fh.read(n_native, dtype="float32", always_2d=True) if s0 < fh.frames else None
            except Exception as err:
                raise AudioDecodeError(f"cannot decode {path} near {q0 / sr:.1f} s: {_reason(err)}") from None
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
                off = plan.starts[i] - q0
                yield i, _pad(seg[off:off + plan.chunk_samples], plan.chunk_samples)


def _stream_chunks(path: Path, plan: ChunkPlan) -> Iterator[tuple[int, np.ndarray]]:
    """Decode front to back in blocks, holding only the samples from the oldest unfinished chunk on."""
    from focaltag.audio.decode import iter_audio_blocks

    order = sorted(range(plan.n_chunks), key=lambda i: plan.starts[i])
    pos = 0  # model-rate sample index of buf[0]
    buf = np.zeros(0, dtype=np.float32)
    k = 0  # next chunk (in ``order``) to complete
    for block in iter_audio_blocks(path, sr=plan.sample_rate, block_seconds=STREAM_BLOCK_SECONDS):
        if k >= len(order):
            break
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32)])
        while k < len(order) and plan.starts[order[k]] + plan.chunk_samples <= pos + len(buf):
            off = plan.starts[order[k]] - pos
            yield order[k], buf[off:off + plan.chunk_samples].copy()
            k += 1
        drop = min(plan.starts[order[k]] - pos, len(buf)) if k < len(order) else len(buf)
        if drop > 0:  # samples before the next chunk (possibly the whole buffer, for sparse chunks) go
            buf = buf[drop:]
            pos += drop
    for i in order[k:]:  # the file ended early (header length was an estimate): pad
        off = plan.starts[i] - pos
        yield i, _pad(buf[max(off, 0):max(off, 0) + plan.chunk_samples], plan.chunk_samples)
