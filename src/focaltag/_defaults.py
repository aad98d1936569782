"""Defaults that the command line shows in ``--help`` before anything heavy (torch) is imported.

``DEFAULT_MODEL`` is the catalogue model (:mod:`focaltag.models.catalogue`, which re-exports it) that
``focaltag tag``, ``focaltag serve`` and ``focaltag.Tagger`` users get without naming one: the paper's ensemble.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MODEL"]

DEFAULT_MODEL = "usc-sail-2020"
