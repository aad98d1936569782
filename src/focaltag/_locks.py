"""The one cross-platform file lock (``filelock``): exclusive lock files beside what they guard.

Used where two processes must not do the same work at once: pulling a catalogue model (``<model>/.lock``), a
waveform-cache worker's data slot (``data-*.lock``), and a library run's output (``<output>.lock``). A lock
file is separate from the file it guards, so readers of that file are never blocked (Windows locks are
mandatory), and it is left in place after release (removing it would race with the next process).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["FileLock", "try_lock", "locked", "lock_path"]


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file that guards ``path``: ``path`` + ``.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def try_lock(path: str | os.PathLike[str]) -> FileLock | None:
    """Take the lock file ``path`` at once, or return None when another process (or handle) holds it.

    The caller releases it with ``.release()`` (process exit releases it too).
    """
    lock = FileLock(os.fspath(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock file ``path`` (waiting for it) for the ``with`` block."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(os.fspath(path), thread_local=False):
        yield
