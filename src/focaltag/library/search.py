"""Nearest tracks of a library by cosine similarity, with the filters a listener expects.

* several seeds mean their mean (of unit vectors, normalised again);
* the seeds are never results, nor are duplicates of a seed: the same audio under another path (a re-encode, a
  copy) has a near-identical embedding *and* the same length, so a track within :data:`DUPLICATE_COSINE` of a
  seed whose duration is within :data:`DUPLICATE_SECONDS` (or 1 %) is one; results that duplicate an earlier
  result are dropped the same way;
* ``where`` keeps tracks that have every named tag (their yes decisions, or their top tags for a model without
  thresholds);
* ``spread`` keeps at most that many tracks per artist (or album), read from the files' own tags.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from focaltag.errors import ConfigError, DataError
from focaltag.library.index import LibraryIndex

__all__ = ["Seed", "Match", "SpreadBy", "DUPLICATE_COSINE", "DUPLICATE_SECONDS", "similar_tracks",
           "resolve_tags", "where_mask", "file_info", "FileInfo", "is_duplicate", "unit_vector"]

logger = logging.getLogger(__name__)

DUPLICATE_COSINE = 0.97
"""Cosine above which two tracks of (nearly) the same length are the same audio. The shared recordings'
MP3 re-encode of ``traveling_minstrels.ogg`` scores 0.980-0.993 against it with Won et al.'s MTAT models
(FCN, CRNN, Musicnn); the closest two different recordings score 0.98 (CRNN) but differ in length by 26 s."""

DUPLICATE_SECONDS = 1.0
"""Largest length difference (seconds, or 1 % of the length when more) of two copies of one recording: an MP3
re-encode adds tens of milliseconds of encoder padding."""

SpreadBy = Literal["artist", "album"]


def unit_vector(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not norm > 0 or not np.isfinite(norm):
        raise DataError("an embedding of zeros (or NaN) has no direction to search by")
    return vector / norm


@dataclass(frozen=True)
class Seed:
    """A track to search from: its name as given, unit vector, duration, and library row when it is one."""

    file: str
    unit: np.ndarray = field(repr=False)
    duration: float
    row: int | None = None


@dataclass(frozen=True)
class Match:
    """A result: the file as in the JSONL's ``"file"``, its cosine similarity, and its row."""

    file: str
    score: float
    row: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class FileInfo:
    """What a playlist and ``spread`` read from a file's own tags (``None`` when absent or unreadable)."""

    artist: str | None
    album: str | None
    title: str | None
    duration: float | None


@functools.lru_cache(maxsize=4096)
def file_info(path: str) -> FileInfo:
    """Artist, album, title and length from the file's tags (mutagen); a file mutagen cannot read gives Nones."""
    import mutagen

    try:
        audio = mutagen.File(path, easy=True)
    except Exception as err:  # mutagen raises its own types and OSError; a broken tag is not fatal here
        logger.debug("%s: cannot read its tags (%s)", path, err)
        return FileInfo(None, None, None, None)
    if audio is None:
        return FileInfo(None, None, None, None)

    def first(*keys: str) -> str | None:
        tags = audio.tags or {}
        for key in keys:
            try:
                values = tags.get(key) if hasattr(tags, "get") else None
            except (KeyError, ValueError):
                values = None
            if values:
                text = str(values[0] if isinstance(values, list) else values).strip()
                if text:
                    return text
        return None

    length = getattr(getattr(audio, "info", None), "length", None)
    return FileInfo(first("artist", "albumartist"), first("album"), first("title"),
                    float(length) if length else None)


def resolve_tags(tag_names: Sequence[str], wanted: Iterable[str]) -> list[int]:
    """Column numbers of the wanted tags: a full name (``mood/theme---calm``) or its short form (``calm``),
    case-insensitively. An unknown tag is a ConfigError naming the close matches."""
    from focaltag.data.tags import short_tag

    by_name: dict[str, int] = {}
    for i, name in enumerate(tag_names):
        by_name.setdefault(name.lower(), i)
        by_name.setdefault(short_tag(name).lower(), i)
    columns = []
    for tag in wanted:
        key = tag.strip().lower()
        if key not in by_name:
            shorts = sorted({short_tag(t) for t in tag_names})
            close = difflib.get_close_matches(key, shorts, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"the library's tags are {', '.join(shorts[:12])}" \
                + (" ..." if len(shorts) > 12 else "")
            raise ConfigError(f"unknown tag {tag!r} for this library; {hint}")
        columns.append(by_name[key])
    return columns


def where_mask(index: LibraryIndex, tags: Sequence[str]) -> np.ndarray:
    """Tracks (rows) that have every tag in ``tags``."""
    columns = resolve_tags(index.tag_names, tags)
    if not columns:
        return np.ones(len(index.files), dtype=bool)
    return np.asarray(np.asarray(index.labels[:, columns], dtype=bool).all(axis=1))


def is_duplicate(score: float, duration: float, other_duration: float) -> bool:
    """Two tracks are one recording: near-identical embeddings and the same length (see the module docstring)."""
    if score < DUPLICATE_COSINE:
        return False
    return abs(duration - other_duration) <= max(DUPLICATE_SECONDS, 0.01 * max(duration, other_duration))


class _Picker:
    """Accepts candidates in order: not a seed, not a duplicate of a seed or of an accepted track, within the
    ``spread`` limit."""

    def __init__(self, index: LibraryIndex, seeds: Sequence[Seed], *, spread: int | None, spread_by: SpreadBy,
                 info: Callable[[str], FileInfo] = file_info) -> None:
        self.index, self.spread, self.spread_by, self.info = index, spread, spread_by, info
        self.excluded = {s.row for s in seeds if s.row is not None}
        self.anchors: list[tuple[np.ndarray, float]] = [(s.unit, s.duration) for s in seeds]
        self.groups: dict[str, int] = {}
        self.duplicates = 0

    def accept(self, row: int) -> bool:
        if row in self.excluded:
            return False
        vrow = int(self.index.vector_row[row])
        vector = np.asarray(self.index.unit[vrow], dtype=np.float32)
        duration = float(self.index.durations[row])
        for unit, other in self.anchors:
            if is_duplicate(float(vector @ unit), duration, other):
                self.duplicates += 1
                return False
        if self.spread is not None:
            info = self.info(self.index.files[row])
            group = info.artist if self.spread_by == "artist" else info.album
            if group is not None:
                key = group.casefold()
                if self.groups.get(key, 0) >= self.spread:
                    return False
                self.groups[key] = self.groups.get(key, 0) + 1
        self.anchors.append((vector, duration))
        return True


def _candidates(index: LibraryIndex, query: np.ndarray, allowed: np.ndarray | None) -> Iterator[tuple[int, float]]:
    """Track rows by decreasing cosine to ``query``; ``allowed`` (per track) limits them."""
    search = index.search()
    track_of = np.flatnonzero(index.vector_row >= 0)
    if allowed is None:
        for vrow, score in search.ranked(query):
            yield int(track_of[vrow]), score
        return
    allowed_v = np.asarray(allowed, dtype=bool)[track_of]
    if allowed_v.sum() * 4 < len(allowed_v):  # a narrow filter: search only its rows, exactly
        for vrow, score in search.ranked(query, rows=np.flatnonzero(allowed_v)):
            yield int(track_of[vrow]), score
        return
    for vrow, score in search.ranked(query):
        if allowed_v[vrow]:
            yield int(track_of[vrow]), score


def similar_tracks(index: LibraryIndex, seeds: Sequence[Seed], n: int = 25, *, where: Sequence[str] = (),
                   spread: int | None = None, spread_by: SpreadBy = "artist",
                   info: Callable[[str], FileInfo] = file_info) -> list[Match]:
    """The ``n`` tracks nearest to the seeds' mean, best first (see the module docstring for the filters).

    Raises DataError when the library has no embeddings, and when ``where`` leaves no track to return.
    """
    if not seeds:
        raise ConfigError("give at least one seed track")
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    if spread is not None and spread < 1:
        raise ConfigError(f"--spread must be >= 1, got {spread}")
    if len(index.unit) == 0:
        raise DataError("this library has no embeddings; rerun 'focaltag tag ... -o LIBRARY.jsonl --embeddings' "
                        "to add them (only the vectors are computed for tracks already tagged)")
    query = unit_vector(np.mean([s.unit for s in seeds], axis=0))
    allowed = where_mask(index, where) if where else None
    picker = _Picker(index, seeds, spread=spread, spread_by=spread_by, info=info)
    out: list[Match] = []
    for row, score in _candidates(index, query, allowed):
        if picker.accept(row):
            out.append(Match(index.files[row], float(score), row))
            if len(out) == n:
                break
    if not out and where:
        why = "decisions" if index.has_decisions else "top tags (the model has no thresholds)"
        raise DataError(f"no track of this library has all of {', '.join(where)} among its {why} besides the "
                        "seeds; drop a --where tag")
    return out
