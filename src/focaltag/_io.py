"""Atomic file writes: a reader never sees a half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False)
        fh.write("\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically ``torch.save`` (a crash mid-save leaves the previous checkpoint intact)."""
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)
