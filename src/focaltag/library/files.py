"""Which files ``focaltag tag`` reads: given files as they are, folders searched recursively for audio."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from focaltag.audio.backends import FFMPEG_EXTENSIONS
from focaltag.errors import ConfigError

__all__ = ["AUDIO_EXTENSIONS", "collect_audio", "extensions_hint"]

AUDIO_EXTENSIONS = FFMPEG_EXTENSIONS
"""Extensions (compared case-insensitively) that a folder search picks up: every audio (and video) container
whose sound :mod:`focaltag.audio` decodes."""


def extensions_hint() -> str:
    """The common extensions of :data:`AUDIO_EXTENSIONS` for an error line (the full list is long)."""
    common = (".mp3", ".m4a", ".flac", ".ogg", ".opus", ".wav", ".aiff", ".wma", ".webm", ".mka", ".wv", ".mp4")
    return f"{', '.join(common)} and {len(AUDIO_EXTENSIONS) - len(common)} more audio and video extensions"


def collect_audio(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of audio files.

    A file named explicitly is kept whatever its extension (a bad one is reported when it is decoded);
    a folder contributes every file below it whose extension is in :data:`AUDIO_EXTENSIONS`.
    Raises ConfigError for a path that does not exist or a folder without audio.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise ConfigError(f"no audio files under {path} (searched recursively for {extensions_hint()})")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ConfigError(f"no such file or folder: {path}")
    return list(dict.fromkeys(out))
