"""``focaltag data ...``: synth, stats, audit, download, prepare."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from focaltag.cli._common import add_group

DATA_MODULES: tuple[str, ...] = (
    "focaltag.cli.data_synth",
    "focaltag.cli.data_stats",
    "focaltag.cli.data_audit",
    "focaltag.cli.data_download",
    "focaltag.cli.data_prepare",
)


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "data", help="dataset tools: synth, stats, audit, download, prepare")
    for name in DATA_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
