"""Where focaltag keeps what it can rebuild or fetch again (ONNX exports, pulled models)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$FOCALTAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/focaltag`` (``~/.cache/focaltag``)."""
    root = os.environ.get("FOCALTAG_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "focaltag"
