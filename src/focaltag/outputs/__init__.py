"""Outputs of a tagging run: result writers (table, JSON, CSV), taggram plots and tags written into audio files.

This stage sits on top of :mod:`focaltag.inference`: it formats and stores :class:`~focaltag.inference.TagResult`
objects and never runs a network itself. Names are re-exported lazily.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "get_writer": "focaltag.outputs.writers",
    "result_to_dict": "focaltag.outputs.writers",
    "plot_taggram": "focaltag.outputs.taggram",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
