"""Playlists from a library run: by mood, as a radio from a seed, and as a glide from one track to another.

* **mood** (:func:`mood_playlist`): the tracks that have every asked tag (yes decisions; top tags for a model
  without thresholds), ranked by the mean of those tags' probabilities; with embeddings, a second copy of a
  listed track (:func:`~focaltag.library.search.is_duplicate`) is left out;
* **radio** (:func:`radio_playlist`): the seed, then tracks chosen by maximal marginal relevance: each next
  track maximises ``RADIO_RELEVANCE * cos(seed) - (1 - RADIO_RELEVANCE) * max cos(already chosen)``, so the list
  stays near the seed without being one corner of it; duplicates of the seed or of a chosen track never enter;
* **path** (:func:`path_playlist`): ``n`` tracks from A to B; step i takes the unused track nearest to the
  normalised interpolation ``(1 - t) A + t B`` at ``t = i / (n - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from focaltag.errors import ConfigError, DataError
from focaltag.library.index import LibraryIndex
from focaltag.library.search import FileInfo, Seed, SpreadBy, _candidates, _Picker, file_info, resolve_tags

__all__ = ["Entry", "mood_playlist", "radio_playlist", "path_playlist", "RADIO_RELEVANCE", "RADIO_POOL"]

RADIO_RELEVANCE = 0.7
"""Weight of closeness to the seed against distance from the tracks already chosen (maximal marginal
relevance; 1 would be plain similarity)."""

RADIO_POOL = 10
"""The radio chooses among the ``RADIO_POOL * n`` tracks nearest to the seed."""


@dataclass(frozen=True)
class Entry:
    """A playlist track: the file as in the JSONL (or a seed's path), its duration, and why it is there
    (a probability for mood, a cosine for radio and path)."""

    file: str
    duration: float
    score: float


def _check_n(n: int, least: int = 1) -> None:
    if n < least:
        raise ConfigError(f"-n must be >= {least}, got {n}")


def mood_playlist(index: LibraryIndex, tags: Sequence[str], n: int = 25) -> list[Entry]:
    """Tracks with every tag in ``tags``, by the mean probability of those tags (best first)."""
    _check_n(n)
    if not tags:
        raise ConfigError("a mood playlist needs at least one --tag")
    columns = resolve_tags(index.tag_names, tags)
    has = np.asarray(index.labels[:, columns], dtype=bool).all(axis=1)
    rows = np.flatnonzero(has)
    if len(rows) == 0:
        why = "yes decisions" if index.has_decisions else "top tags (the model has no thresholds)"
        raise DataError(f"no track of this library has all of {', '.join(tags)} among its {why}; ask for fewer "
                        "tags")
    score = np.asarray(index.probabilities[rows][:, columns], dtype=np.float32).mean(axis=1)
    order = np.lexsort((rows, -score))
    picker = _Picker(index, [], spread=None, spread_by="artist") if len(index.unit) else None
    out: list[Entry] = []
    for r, s in zip(rows[order].tolist(), score[order].tolist(), strict=True):
        if picker is not None and index.vector_row[r] >= 0 and not picker.accept(r):
            continue  # another copy of a track already listed
        out.append(Entry(index.files[r], float(index.durations[r]), float(s)))
        if len(out) == n:
            break
    return out


def radio_playlist(index: LibraryIndex, seed: Seed, n: int = 25, *, spread: int | None = None,
                   spread_by: SpreadBy = "artist", info: Callable[[str], FileInfo] = file_info) -> list[Entry]:
    """The seed, then ``n - 1`` tracks near it with variety (maximal marginal relevance; see the module)."""
    _check_n(n)
    picker = _Picker(index, [seed], spread=None, spread_by=spread_by, info=info)
    pool: list[tuple[int, float]] = []
    for row, score in _candidates(index, seed.unit, None):
        if picker.accept(row):  # the seed, its duplicates and duplicates within the pool are left out
            pool.append((row, score))
            if len(pool) >= RADIO_POOL * n:
                break
    out = [Entry(seed.file, seed.duration, 1.0)]
    if not pool:
        return out
    rows = np.asarray([r for r, _ in pool])
    vectors = np.asarray(index.unit[index.vector_row[rows]], dtype=np.float32)
    relevance = np.asarray([s for _, s in pool], dtype=np.float32)
    nearest_chosen = np.full(len(pool), -np.inf, dtype=np.float32)
    free = np.ones(len(pool), dtype=bool)
    groups: dict[str, int] = {}
    while len(out) < n and free.any():
        redundancy = np.where(np.isfinite(nearest_chosen), nearest_chosen, 0.0)
        value = RADIO_RELEVANCE * relevance - (1 - RADIO_RELEVANCE) * redundancy
        value[~free] = -np.inf
        best = int(np.argmax(value))
        free[best] = False
        if spread is not None:
            meta = info(index.files[int(rows[best])])
            group = meta.artist if spread_by == "artist" else meta.album
            if group is not None:
                key = group.casefold()
                if groups.get(key, 0) >= spread:
                    continue
                groups[key] = groups.get(key, 0) + 1
        row = int(rows[best])
        out.append(Entry(index.files[row], float(index.durations[row]), float(relevance[best])))
        nearest_chosen = np.maximum(nearest_chosen, vectors @ vectors[best])
    return out


def path_playlist(index: LibraryIndex, start: Seed, end: Seed, n: int = 12) -> list[Entry]:
    """``n`` tracks from ``start`` to ``end`` (both included), gliding through the library (see the module)."""
    _check_n(n, least=2)
    picker = _Picker(index, [start, end], spread=None, spread_by="artist")
    out = [Entry(start.file, start.duration, 1.0)]
    for i in range(1, n - 1):
        t = i / (n - 1)
        target = (1 - t) * start.unit + t * end.unit
        norm = float(np.linalg.norm(target))
        target = target / norm if norm > 0 else end.unit
        for row, score in _candidates(index, target, None):
            if picker.accept(row):
                out.append(Entry(index.files[row], float(index.durations[row]), float(score)))
                break
        else:
            break  # the library has no more tracks to offer
    out.append(Entry(end.file, end.duration, 1.0))
    return out
