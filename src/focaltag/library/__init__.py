"""Library runs: which files of a music library are read, the resumable and shardable JSONL run over them
(:mod:`focaltag.library.runs`), and what is built from its results.

This stage sits on top of :mod:`focaltag.inference` and :mod:`focaltag.outputs`. Names are re-exported lazily.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "collect_audio": "focaltag.library.files",
    "Library": "focaltag.library.api",
    "VectorStore": "focaltag.library.store",
    "tag_library": "focaltag.library.runs",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
