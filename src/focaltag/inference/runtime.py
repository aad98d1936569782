"""Process-wide settings for running networks: made by one explicit call, never as a side effect of loading.

``focaltag tag``, ``predict``, ``serve``, the beets plugin and Ray actors call :func:`configure_runtime` once
before they tag; a Python user calls it too (``focaltag.configure_runtime()``) to get the same speed. It keeps
freed activation buffers in the process (glibc, :func:`focaltag._resources.tune_allocator`) and gives torch's
intra-op threads the cores left beside the decoding threads (:func:`focaltag._resources.thread_budget`), and
flushes subnormal floats to zero on x86 CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from focaltag._resources import thread_budget, tune_allocator, usable_cores
from focaltag.errors import ConfigError

__all__ = ["RuntimePlan", "configure_runtime", "DEFAULT_DECODE_THREADS"]

DEFAULT_DECODE_THREADS = 2
"""Decoding threads asked for by default; the thread budget may grant fewer."""


@dataclass(frozen=True)
class RuntimePlan:
    """What :func:`configure_runtime` set: decoding threads granted, torch intra-op threads, allocator tuned."""

    decode_threads: int
    torch_threads: int
    allocator_tuned: bool
    denormals_flushed: bool = False


def configure_runtime(*, cores: int | None = None, decode_threads: int | None = None) -> RuntimePlan:
    """Set up this process for inference on ``cores`` CPU cores (default: those it may run on).

    ``decode_threads`` given: those decoding threads are taken as they are and torch gets the rest of the budget;
    ``None``: :data:`DEFAULT_DECODE_THREADS` within the budget. torch's threads are only ever lowered, so a
    smaller setting made by the caller (``torch.set_num_threads(1)`` in a Ray actor) stays.
    """
    import torch

    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
        raise ConfigError(f"cores must be an integer >= 1, got {cores!r}")
    n = usable_cores() if cores is None else cores
    tuned = tune_allocator()
    decode, intra = thread_budget(DEFAULT_DECODE_THREADS if decode_threads is None else decode_threads, n)
    if decode_threads is not None:
        decode = decode_threads
    if torch.get_num_threads() > intra:
        torch.set_num_threads(intra)
    # subnormal floats take a slow path in x86 arithmetic; Won et al.'s trained MSD and Jamendo networks produce
    # them, and flushing them to zero left their outputs identical (bench/similar.py) at a fraction of the time
    flushed = bool(torch.set_flush_denormal(True))
    return RuntimePlan(decode_threads=decode, torch_threads=torch.get_num_threads(), allocator_tuned=tuned,
                       denormals_flushed=flushed)
