"""Prediction matrix of a split (tracks x tags) from the waveform cache, ready for ``focaltag evaluate``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from focaltag.errors import DataError
from focaltag.inference.members import Runtime
from focaltag.inference.precision import TagPrecision

if TYPE_CHECKING:
    from focaltag.audio.cache import WaveformCache
    from focaltag.inference.tagger import Tagger
    from focaltag.models.resolve import ModelSpecs, ResolvedModel

__all__ = ["predict_split", "save_predictions", "tracks_path"]

logger = logging.getLogger(__name__)


def _open_cache(cache: Any) -> Any:
    if hasattr(cache, "read") and hasattr(cache, "length"):
        return cache
    from focaltag.audio.cache import WaveformCache

    return WaveformCache(cache)


def predict_split(models: ModelSpecs | ResolvedModel | None, tsv: str | os.PathLike[str],
                  cache: WaveformCache | str | os.PathLike[str], n_chunks: int = 32, *,
                  batch_size: int = 32, runtime: Runtime = "torch", device: str = "cpu",
                  precision: TagPrecision = "auto",
                  tagger: Tagger | None = None) -> tuple[np.ndarray, list[str]]:
    """Score every track of a split TSV: ``(matrix float32 (n_tracks, n_tags), track_ids)``.

    Rows follow the TSV's row order, columns the canonical tag order (sorted full names); each entry is the
    mean sigmoid probability over ``n_chunks`` evenly spaced chunks (and over ensemble members). Every track
    must be in the cache (``focaltag data prepare``). ``precision`` as :class:`~focaltag.inference.Tagger`'s
    (``"auto"``: the rule of :mod:`focaltag.precision`).
    """
    from focaltag._progress import progress
    from focaltag.audio.chunks import eval_chunks
    from focaltag.data.metadata import read_tracks
    from focaltag.inference.options import InferenceOptions
    from focaltag.inference.tagger import Tagger

    tracks = read_tracks(tsv, allow_untagged=True)
    if not tracks:
        raise DataError(f"{tsv}: no tracks to predict")
    store = _open_cache(cache)
    missing = [t.track_id for t in tracks if t.track_id not in store]
    if missing:
        raise DataError(f"{len(missing)} of {len(tracks)} tracks of {tsv} are not in the cache (e.g. {missing[0]}); "
                        "run 'focaltag data prepare' for this split first")
    if tagger is None:
        if models is None:
            raise DataError("predict_split needs a model or a tagger")
        tagger = Tagger(models, InferenceOptions(n_chunks=n_chunks, batch_size=batch_size, runtime=runtime,
                                                 device=device, precision=precision, thresholds=None))
    logger.info("predicting %d tracks with %d model(s), %d chunks per track, precision %s", len(tracks),
                len(tagger.members), n_chunks, tagger.precision)
    canonical = sorted(tagger.tag_names)
    columns = [tagger.tag_names.index(t) for t in canonical]
    chunk = tagger.chunk_samples
    out = np.zeros((len(tracks), len(canonical)), dtype=np.float32)

    def batches() -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        """Chunks of consecutive tracks packed into batches of about ``batch_size``."""
        owners: list[tuple[int, int]] = []
        parts: list[np.ndarray] = []
        size = 0
        for row, rec in enumerate(tracks):
            chunks = eval_chunks(store, rec.track_id, chunk, n_chunks)
            owners.append((row, len(chunks)))
            parts.append(chunks)
            size += len(chunks)
            if size >= batch_size:
                yield owners, np.concatenate(parts)
                owners, parts, size = [], [], 0
        if parts:
            yield owners, np.concatenate(parts)

    bar = progress(total=len(tracks), desc="predict", unit="track")
    for owners, chunks in batches():
        probs = tagger.predict_chunks(chunks)
        lo = 0
        for row, n in owners:
            out[row] = probs[lo:lo + n].mean(axis=0)[columns]
            lo += n
        bar.update(len(owners))
    bar.close()
    return out, [t.track_id for t in tracks]


def tracks_path(npy_path: str | os.PathLike[str]) -> Path:
    """``PRED.npy`` -> ``PRED.tracks.txt`` (the row ids beside a prediction matrix)."""
    path = Path(npy_path)
    stem = path.name[:-4] if path.name.endswith(".npy") else path.name
    return path.with_name(stem + ".tracks.txt")


def save_predictions(path: str | os.PathLike[str], matrix: np.ndarray, track_ids: list[str]) -> tuple[Path, Path]:
    """Atomically write ``PRED.npy`` and ``PRED.tracks.txt`` (one track id per line)."""
    from focaltag._io import atomic_write, write_text

    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    with atomic_write(path, "wb") as fh:
        np.save(fh, np.asarray(matrix, dtype=np.float32))
    ids = tracks_path(path)
    write_text(ids, "".join(f"{t}\n" for t in track_ids))
    return path, ids
