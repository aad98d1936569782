"""A beets library in a temporary folder for the tests that drive the focaltag plugin through the real ``beet``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def beets_env(root: Path, focaltag: Mapping[str, object], **settings: object) -> dict[str, str]:
    """Write ``root/beetsdir/config.yaml``: the library and its music folder under ``root``, imports that neither
    copy nor write files, the focaltag plugin configured with ``focaltag`` (its section), and any other top-level
    ``settings`` (e.g. ``id3v23=True``); returns this environment with ``BEETSDIR`` pointing there."""
    beetsdir = root / "beetsdir"
    beetsdir.mkdir(parents=True)
    lines = [f"directory: {root / 'music'}", f"library: {root / 'library.db'}", "plugins: [focaltag]",
             *(f"{key}: {_yaml(value)}" for key, value in settings.items()),
             "import:", "  copy: no", "  write: no", "  log: null",
             "focaltag:", *(f"  {key}: {_yaml(value)}" for key, value in focaltag.items())]
    (beetsdir / "config.yaml").write_text("\n".join(lines) + "\n")
    return {**os.environ, "BEETSDIR": str(beetsdir)}
