"""Reading tracks for the tagger: chunk plans and decoded chunks as typed events, optionally in threads.

:func:`read_events` turns a stream of inputs (paths or waveforms) into events, in order per input:
:class:`Start` (the plan), :class:`Chunk` per planned chunk, :class:`End`; or :class:`Failure` with the one-line
reason. With ``workers`` threads, each takes the next input, reads it and queues its events; a file's events
stay in order, files interleave, and a bounded queue keeps memory to about two batches of chunks plus one file
being read per worker. The tagger (:class:`focaltag.inference.tagger.Tagger`) only runs the network on them.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from focaltag.audio.chunks import cut_chunks
from focaltag.errors import AudioDecodeError, FocaltagError, first_line
from focaltag.inference.chunking import ChunkPlan, ReadMethod, iter_chunks, plan_file, plan_starts

__all__ = ["ReadSettings", "Start", "Chunk", "End", "Failure", "ReadEvent", "read_events", "read_one",
           "decode_failure", "DECODER_ERRORS"]

DECODER_ERRORS = (OSError, RuntimeError, ValueError, TypeError, EOFError)
"""What decoders raise that focaltag has not wrapped yet; each becomes an :class:`AudioDecodeError`."""


@dataclass(frozen=True)
class ReadSettings:
    """How inputs are planned and read: the model's rate and chunk length, chunks per track or a hop."""

    sample_rate: int
    chunk_samples: int
    n_chunks: int = 16
    hop_samples: int | None = None
    method: ReadMethod = "auto"
    adaptive: bool = False  # hand a file's chunks over in low-discrepancy order (adaptive chunking)

    def plan(self, path: str | os.PathLike[str]) -> ChunkPlan:
        """Chunk positions for a file, from its header only."""
        return plan_file(path, sample_rate=self.sample_rate, chunk_samples=self.chunk_samples,
                         n_chunks=self.n_chunks, hop_samples=self.hop_samples)

    def plan_waveform(self, wave: Any, sr: int | None, name: str) -> tuple[ChunkPlan, np.ndarray]:
        """Mono float32 at the model rate plus its chunk plan."""
        from focaltag.audio.decode import mono_at_rate

        wave = mono_at_rate(wave, sr, self.sample_rate)
        starts = plan_starts(len(wave), self.chunk_samples, n_chunks=self.n_chunks, hop_samples=self.hop_samples)
        return ChunkPlan(name, self.sample_rate, len(wave), self.chunk_samples, tuple(starts)), wave


@dataclass(frozen=True)
class Start:
    """Input ``index`` is planned; ``wave`` is the whole waveform when the input was one (else None)."""

    index: int
    plan: ChunkPlan
    wave: np.ndarray | None


@dataclass(frozen=True)
class Chunk:
    """Chunk ``position`` (an index into the plan's starts) of input ``index``."""

    index: int
    position: int
    samples: np.ndarray


@dataclass(frozen=True)
class End:
    """Every chunk of input ``index`` has been handed over."""

    index: int


@dataclass(frozen=True)
class Failure:
    """Input ``index`` (called ``source``) could not be read; earlier chunks of it are to be dropped."""

    index: int
    source: str
    error: Exception


ReadEvent: TypeAlias = "Start | Chunk | End | Failure"


def decode_failure(name: str, err: BaseException) -> AudioDecodeError:
    """The one-line error of a decoder exception focaltag has not wrapped."""
    return AudioDecodeError(f"cannot decode {name}: {type(err).__name__}: {first_line(err, default='')}")


def read_one(index: int, item: Any, sr: int | None, settings: ReadSettings) -> Iterator[ReadEvent]:
    """The events of one input (a path, or a waveform at ``sr``)."""
    name = str(item) if isinstance(item, (str, os.PathLike)) else f"<waveform {index}>"
    try:
        wave = None
        if isinstance(item, (str, os.PathLike)):
            plan = settings.plan(item)
            chunks = iter_chunks(plan, method=settings.method)
        else:
            plan, wave = settings.plan_waveform(item, sr, name)
            chunks = cut_chunks(wave, plan.starts, plan.chunk_samples)
        if settings.adaptive and plan.n_chunks > 1:
            # decoded in one pass as always (no extra seeks), handed over so that any prefix spans the track
            from focaltag.inference.adaptive import ld_order

            decoded = dict(chunks)
            chunks = iter([(i, decoded[i]) for i in ld_order(plan.n_chunks)])
        yield Start(index, plan, wave)
        for position, samples in chunks:
            yield Chunk(index, position, samples)
        yield End(index)
    except FocaltagError as err:
        yield Failure(index, name, err)
    except DECODER_ERRORS as err:
        yield Failure(index, name, decode_failure(name, err))


@dataclass(frozen=True)
class _Crash:
    error: BaseException


def read_events(inputs: Iterable[Any], sr: int | None, settings: ReadSettings, *, workers: int,
                queue_size: int) -> Iterator[ReadEvent]:
    """All inputs' events; with ``workers`` threads decoding ahead into one queue of ``queue_size`` events.

    ``workers=0`` reads in the calling thread. A bug in a reader thread is raised here, in the caller.
    """
    if workers == 0:
        for index, item in enumerate(inputs):
            yield from read_one(index, item, sr, settings)
        return
    q: queue.Queue[ReadEvent | _Crash | None] = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    source = enumerate(inputs)
    lock = threading.Lock()

    def put(event: ReadEvent | _Crash | None) -> bool:
        """Queue ``event`` unless the consumer has gone away (then False)."""
        while not stop.is_set():
            try:
                q.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take() -> tuple[int, Any] | None:
        with lock:  # the caller's iterable is read by one thread at a time
            return next(source, None)

    def produce() -> None:
        try:
            while not stop.is_set() and (job := take()) is not None:
                for event in read_one(job[0], job[1], sr, settings):
                    if not put(event):
                        return
        except BaseException as err:  # a bug in the reader must surface in the caller, not die here
            put(_Crash(err))
        finally:
            put(None)  # this worker is done

    threads = [threading.Thread(target=produce, name=f"focaltag-decode-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        finished = 0
        while finished < len(threads):
            event = q.get()
            if event is None:
                finished += 1
            elif isinstance(event, _Crash):
                raise event.error
            else:
                yield event
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
