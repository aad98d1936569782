"""CPU resources of an inference process: glibc's allocator settings and one thread budget.

**Allocator.** Tagging with torch eager on Linux spent as much time in the kernel as in the network (the paper
ResNet and Won et al.'s FCN, ``../shared/notes/cpu-without-bf16.md``; one thread gives the same, so it is not
OpenMP). The cause is glibc: every activation buffer above its mmap threshold (128 KiB, growing only up to what
was last freed) is a fresh ``mmap``, unmapped again when freed, and every page of the next one faults in anew;
smaller ones are trimmed back from the heap top. :func:`tune_allocator` raises the mmap threshold to glibc's
maximum for ``mallopt`` (32 MiB on 64-bit) and turns trimming off, so the buffers are reused inside the process.
Memory freed stays with the process (its peak is reached on the first batch anyway). It is called by the CLI's
inference commands and by ``Tagger``, never by a plain ``import focaltag``. Buffers above 32 MiB (FCN's and CRNN's
29 s chunks, batches of 4) are still mapped per call: ``mallopt`` refuses more, only ``GLIBC_TUNABLES`` at process
start allows it; onnxruntime's arena (``--precision int8`` / the ONNX runtime) does not have the problem.

**Threads.** :func:`thread_budget` splits the usable cores between decoding threads and the network's intra-op
threads: from 4 cores on, together they never exceed the cores. Below 4 cores one decoding thread runs beside a
network that keeps every core, because that measured fastest (see there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading

__all__ = ["tune_allocator", "usable_cores", "thread_budget", "MMAP_THRESHOLD_MAX", "GLIBC_MALLOC_TUNABLES",
           "tunables_environment", "started_with_tunables", "worker_environment"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
MMAP_THRESHOLD_MAX = 32 * 2 ** 20
"""glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit (``HEAP_MAX_SIZE / 2``; larger values are refused)."""
_TRIM_OFF = 2 ** 62

_lock = threading.Lock()
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed activation buffers in the process (glibc only; idempotent). Returns whether it applied.

    Skipped when the user already set malloc tunables or ``FOCALTAG_MALLOC=default``.
    """
    global _tuned
    with _lock:
        if _tuned is not None:
            return _tuned
        _tuned = False
        if not sys.platform.startswith("linux") or os.environ.get("FOCALTAG_MALLOC", "") == "default":
            return False
        if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or os.environ.get("LD_PRELOAD"):
            return False  # the user (or jemalloc / tcmalloc) chose already
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            gnu = ctypes.CFUNCTYPE(ctypes.c_char_p)(("gnu_get_libc_version", libc))
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # musl or another libc: its allocator, its rules
        del gnu
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
        ok = mallopt(_M_TRIM_THRESHOLD, min(_TRIM_OFF, 2 ** 31 - 1)) == 1 and ok
        _tuned = ok
        logger.debug("glibc malloc: mmap threshold %d MiB, trimming off (%s)", MMAP_THRESHOLD_MAX >> 20,
                     "applied" if ok else "refused")
        return ok


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_budget(workers: int, cores: int | None = None) -> tuple[int, int]:
    """``(decoding threads, intra-op threads)`` for ``workers`` requested decoding threads on ``cores`` cores.

    From 4 cores on they never exceed the cores: decoding gets a quarter of them (capped at ``workers``), the
    network the rest. Below 4 cores a strict split would leave the network one core or decode in line between
    batches, and both measured slower than one decoding thread beside a network on every core (README,
    "thread budget" row), the decoding thread mostly waiting on its queue. So there one decoding thread (when ``workers`` asks for any)
    runs beside a network that keeps every core.
    """
    cores = usable_cores() if cores is None else max(1, int(cores))
    if cores < 4:
        return min(max(workers, 0), 1), cores
    decode = min(max(workers, 0), cores // 4)
    return decode, cores - decode


GLIBC_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
"""glibc's malloc tunables that keep every freed buffer in the process, read by glibc only when a process starts.
``mallopt`` (:func:`tune_allocator`) cannot raise the mmap threshold past 32 MiB; FCN's and CRNN's activation
buffers are larger, so only these remove their page faults (``../shared/notes/cpu-without-bf16.md``)."""

_MARK = "FOCALTAG_MALLOC_TUNED"  # set for the re-executed process only, removed again as it starts


def _is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


def tunables_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-execute a network-running command with, or None to run as it is.

    None unless this is Linux with glibc and the user chose nothing about the allocator: any ``GLIBC_TUNABLES``
    or ``LD_PRELOAD`` of theirs, or ``FOCALTAG_MALLOC=default``, is left exactly as it is. A process that was
    already re-executed is never re-executed again.
    """
    if not sys.platform.startswith("linux") or _MARK in environ:
        return None
    if "GLIBC_TUNABLES" in environ or environ.get("LD_PRELOAD") or environ.get("FOCALTAG_MALLOC", "") == "default":
        return None
    if not _is_glibc():
        return None
    return {**environ, "GLIBC_TUNABLES": GLIBC_MALLOC_TUNABLES, _MARK: "1"}


def started_with_tunables() -> bool:
    """In a re-executed process: remove what was added, so child processes get the user's own environment, and
    say whether the tunables were applied at start (idempotent)."""
    global _started_tuned
    if _started_tuned is None:
        _started_tuned = os.environ.pop(_MARK, None) is not None
        if _started_tuned:
            os.environ.pop("GLIBC_TUNABLES", None)
    return _started_tuned


_started_tuned: bool | None = None


def worker_environment() -> dict[str, str]:
    """Environment variables for the worker processes this process has started elsewhere (Ray actors), so that
    they start with the allocator a local run has: glibc's malloc tunables, under the same rule as the console
    script's re-execution (:func:`tunables_environment`). Empty when the user chose the allocator
    (``GLIBC_TUNABLES``, ``LD_PRELOAD``, ``FOCALTAG_MALLOC=default``) or this is not Linux with glibc."""
    started_with_tunables()  # a re-executed process: the user's own environment is what the rule reads
    return {} if tunables_environment(dict(os.environ)) is None else {"GLIBC_TUNABLES": GLIBC_MALLOC_TUNABLES}


