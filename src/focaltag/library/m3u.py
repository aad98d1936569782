"""Extended M3U playlists (``.m3u8``: UTF-8) that Navidrome, Jellyfin, mpd and beets import.

The file starts with ``#EXTM3U``; each track is an ``#EXTINF:<seconds>,<artist> - <title>`` line (from the
file's own tags, the file name when it has none) followed by its path, relative to the playlist's folder by
default so the library and its playlists can move together (absolute on request, and always across Windows
drives, where no relative path exists). The write is atomic: a playlist is whole or not there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from focaltag._io import atomic_write
from focaltag.errors import ConfigError
from focaltag.library.playlist import Entry
from focaltag.library.search import FileInfo, file_info

__all__ = ["write_m3u", "m3u_text", "playlist_path"]


def _title(entry: Entry, info: FileInfo) -> str:
    name = info.title or Path(entry.file).stem
    text = f"{info.artist} - {name}" if info.artist else name
    return " ".join(text.split())  # one line whatever the tags hold


def playlist_path(file: str, folder: Path, *, absolute: bool) -> str:
    """The path a playlist in ``folder`` writes for ``file`` (forward slashes when relative)."""
    full = os.path.abspath(file)
    if absolute:
        return full
    try:
        rel = os.path.relpath(full, os.path.abspath(folder))
    except ValueError:  # another drive on Windows
        return full
    return Path(rel).as_posix()


def m3u_text(entries: Sequence[Entry], folder: Path, *, absolute: bool = False,
             info: Callable[[str], FileInfo] = file_info) -> str:
    """The playlist as text (see the module docstring)."""
    lines = ["#EXTM3U"]
    for entry in entries:
        meta = info(entry.file)
        seconds = meta.duration if meta.duration is not None else entry.duration
        length = int(round(seconds)) if seconds and math.isfinite(seconds) else -1
        lines.append(f"#EXTINF:{length},{_title(entry, meta)}")
        lines.append(playlist_path(entry.file, folder, absolute=absolute))
    return "\n".join(lines) + "\n"


def write_m3u(entries: Sequence[Entry], path: str | os.PathLike[str], *, absolute: bool = False,
              info: Callable[[str], FileInfo] = file_info) -> Path:
    """Write an ``.m3u8`` playlist atomically; a path that cannot be written is one ConfigError line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"-o {path} is a folder; give a playlist file name such as {path / 'mix.m3u8'}")
    text = m3u_text(entries, path.parent, absolute=absolute, info=info)
    try:
        with atomic_write(path, "wb") as f:  # UTF-8 whatever the platform's default; a name that is not
            f.write(text.encode("utf-8", "surrogateescape"))  # UTF-8 keeps its bytes, as the OS gave them
    except OSError as err:
        raise ConfigError(f"cannot write the playlist {path}: {err.strerror or err}; pick a folder this user can "
                          "write") from None
    return path
