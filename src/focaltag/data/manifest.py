"""SHA-256 manifests (``SHA256 NAME`` per line) as the MTG-Jamendo download folder ships them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from focaltag.errors import DataError

__all__ = [
    "read_manifest",
    "parse_manifest",
    "sha256_file",
    "manifest_files",
    "metadata_path",
]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_manifest(lines: list[str], *, source: str = "<manifest>") -> dict[str, str]:
    """``{name: sha256}`` in file order from ``SHA256 NAME`` lines (``sha256sum`` output is accepted too).

    Blank lines and ``#`` comments are skipped; a malformed line, an unsafe name (absolute or with ``..``)
    or a name listed twice with different hashes raises DataError naming ``source`` and the line.
    """
    out: dict[str, str] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _HEX64.match(parts[0]):
            raise DataError(f"{source} line {lineno}: expected 'SHA256 NAME' (64 hex digits, a space, a file "
                            f"name), got {line[:80]!r}")
        digest, name = parts[0].lower(), parts[1].strip().lstrip("*")  # sha256sum marks binary mode with '*'
        pure = PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
            raise DataError(f"{source} line {lineno}: unsafe file name {name!r}; names must be relative paths "
                            "without '..'")
        if out.get(name, digest) != digest:
            raise DataError(f"{source} line {lineno}: {name} is listed twice with different checksums")
        out[name] = digest
    return out


def read_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a manifest file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected 'SHA256 NAME' lines") from None
    entries = parse_manifest(text.splitlines(), source=str(path))
    if not entries:
        raise DataError(f"{path}: no entries; expected one 'SHA256 NAME' line per file")
    return entries


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so multi-GB archives do not load into memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def manifest_files(manifest_dir: str | os.PathLike[str], dataset: str, data_type: str) -> tuple[Path, Path]:
    """Paths of the official ``<dataset>_<type>_sha256_tars.txt`` and ``..._sha256_tracks.txt`` (may not exist)."""
    root = Path(manifest_dir)
    return (root / f"{dataset}_{data_type}_sha256_tars.txt", root / f"{dataset}_{data_type}_sha256_tracks.txt")


def metadata_path(name: str) -> str:
    """Map a downloaded file name to its metadata PATH: ``48/948.low.mp3`` -> ``48/948.mp3``."""
    return name[: -len(".low.mp3")] + ".mp3" if name.endswith(".low.mp3") else name
