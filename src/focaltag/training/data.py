"""A training run's data: dataset -> tracks -> tag vocabulary, class counts and the waveform cache.

``data.dataset_dir`` is opened by :func:`focaltag.data.dataset.open_dataset` (the MTG-Jamendo layout of
``data.tagset`` and ``data.split``, or an own ``tracks.csv``). The vocabulary is the tag set's (under
``data.tag_category`` when set; every tag of a tracks.csv), in sorted order; extra training lists and the
validation split are restricted to it. Every track must be in the 16 kHz cache; a
missing cache is built from the audio when ``data.auto_prepare`` is on and the audio is there.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.data.dataset import Dataset, open_dataset
from focaltag.data.metadata import SUBSETS, TagVocabulary, TrackRecord, merge_track_lists, read_tracks
from focaltag.errors import ConfigError, DataError
from focaltag.training.config import DataConfig

__all__ = ["RunData", "resolve_split_files", "part_files", "dataset_of", "audio_dir_of", "load_run_tracks",
           "cache_dir_of", "prepare_missing", "check_cache", "open_cache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """Tracks and targets of a run (tags restricted to ``vocab``)."""

    train: list[TrackRecord]
    validation: list[TrackRecord]
    vocab: TagVocabulary
    train_labels: np.ndarray  # (n_train, n_tags) int64 multi-hot
    class_counts: np.ndarray  # (n_tags,) training tracks per tag

    def summary(self) -> dict[str, Any]:
        present = self.class_counts[self.class_counts > 0]
        return {"train_tracks": len(self.train), "validation_tracks": len(self.validation),
                "tags": len(self.vocab),
                "imbalance_factor": round(float(present.max() / present.min()), 2) if present.size else None}


def dataset_of(cfg: DataConfig) -> Dataset | None:
    """The opened ``data.dataset_dir`` (None when there is none, or both split files are given explicitly)."""
    if cfg.dataset_dir is None or (cfg.train_tsv is not None and cfg.validation_tsv is not None):
        return None
    try:
        return open_dataset(cfg.dataset_dir, tagset=cfg.tagset, split=cfg.split, tag_category=cfg.tag_category,
                            where="data.tagset / data.tag_category")
    except (DataError, ConfigError) as err:
        raise type(err)(f"data.dataset_dir: {err}") from None


def part_files(cfg: DataConfig) -> dict[str, Path]:
    """Metadata file of each part (train, validation, test): ``data.train_tsv`` / ``data.validation_tsv`` where
    set, else the dataset's (the split files, or lists derived from a tracks.csv)."""
    if cfg.dataset_dir is None:
        if cfg.train_tsv is None or cfg.validation_tsv is None:
            raise ConfigError("data: set data.dataset_dir (an MTG-Jamendo-layout folder with splits/split-N/, or "
                              "a folder with tracks.csv) or both data.train_tsv and data.validation_tsv")
        return {"train": Path(cfg.train_tsv), "validation": Path(cfg.validation_tsv)}
    try:
        ds = open_dataset(cfg.dataset_dir, tagset=cfg.tagset, split=cfg.split, tag_category=cfg.tag_category,
                          where="data.tagset / data.tag_category")
    except (DataError, ConfigError) as err:
        raise type(err)(f"data.dataset_dir: {err}") from None
    files = {part: ds.part_file(part) for part in SUBSETS}
    if cfg.train_tsv is not None:
        files["train"] = Path(cfg.train_tsv)
    if cfg.validation_tsv is not None:
        files["validation"] = Path(cfg.validation_tsv)
    return files


def resolve_split_files(cfg: DataConfig) -> tuple[Path, Path]:
    """(train file, validation file): explicit files, else the dataset's."""
    files = part_files(cfg)
    return files["train"], files["validation"]


def audio_dir_of(cfg: DataConfig) -> Path | None:
    """``data.audio_dir``, else the dataset's audio folder (``<dataset_dir>/audio``, or the folder of a
    tracks.csv)."""
    if cfg.audio_dir is not None:
        return Path(cfg.audio_dir)
    if cfg.dataset_dir is None:
        return None
    from focaltag.data.dataset import is_own_dataset

    return Path(cfg.dataset_dir) if is_own_dataset(cfg.dataset_dir) else Path(cfg.dataset_dir) / "audio"


def _restrict(tracks: list[TrackRecord], vocab: TagVocabulary) -> tuple[list[TrackRecord], int]:
    """Drop tags outside ``vocab``; returns the tracks and how many were left with no tag at all."""
    keep = set(vocab.tags)
    out, emptied = [], 0
    for rec in tracks:
        tags = tuple(t for t in rec.tags if t in keep)
        if len(tags) != len(rec.tags):
            rec = dataclasses.replace(rec, tags=tags)
        emptied += not tags
        out.append(rec)
    return out, emptied


def load_run_tracks(cfg: DataConfig) -> RunData:
    """Read the split (and extra training lists), build the vocabulary and the training targets."""
    ds = dataset_of(cfg)
    train_file, val_file = resolve_split_files(cfg)
    if ds is not None and cfg.train_tsv is None:
        official = ds.tracks("train")
        vocab = ds.vocabulary()
    else:
        official = read_tracks(train_file)
        vocab = TagVocabulary.from_tracks(official, category=cfg.tag_category)
    lists = [official] + [read_tracks(p) for p in cfg.extra_train]
    train = merge_track_lists(*lists, names=[str(train_file)] + [str(p) for p in cfg.extra_train])
    train, emptied = _restrict(train, vocab)
    if emptied:
        log.warning("%d training tracks have no tag of the %d-tag vocabulary and are used as all-negative examples",
                    emptied, len(vocab))
    if ds is not None and cfg.validation_tsv is None:
        validation, _ = _restrict(ds.tracks("validation"), vocab)
    else:
        validation, _ = _restrict(read_tracks(val_file, allow_untagged=True), vocab)
    overlap = {r.track_id for r in train} & {r.track_id for r in validation}
    if overlap:
        raise DataError(f"{len(overlap)} track(s) are in both the training and the validation lists "
                        f"(e.g. {sorted(overlap)[0]}); remove them from the extra training lists")
    labels = vocab.encode(train)
    counts = labels.sum(axis=0)
    if (counts == 0).any():
        absent = [vocab.tags[i] for i in np.flatnonzero(counts == 0)]
        log.warning("%d tag(s) have no training track (e.g. %s); they cannot be learned", len(absent), absent[0])
    return RunData(train, validation, vocab, labels, counts)


def _audio_dirs(cfg: DataConfig) -> tuple[Path | None, Path | None]:
    return audio_dir_of(cfg), cfg.extra_audio_dir


def cache_dir_of(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``<dataset_dir>/cache``."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    if cfg.dataset_dir is None:
        raise ConfigError("data.cache_dir is not set and there is no data.dataset_dir to put it under; set "
                          "data.cache_dir")
    return Path(cfg.dataset_dir) / "cache"


def _missing(cache_dir: Path, tracks: list[TrackRecord]) -> list[TrackRecord]:
    """Tracks not (yet) in the cache at ``cache_dir`` (all of them when there is no cache)."""
    from focaltag.audio.cache import WaveformCache

    try:
        cache = WaveformCache(cache_dir)
    except (DataError, FileNotFoundError, OSError):
        return list(tracks)
    try:
        return [r for r in tracks if r.track_id not in cache]
    finally:
        close = getattr(cache, "close", None)
        if callable(close):
            close()


def prepare_missing(cfg: DataConfig, data: RunData, *, shard: tuple[int, int] = (0, 1)) -> None:
    """Build this shard's missing cache entries (``data.auto_prepare``), or say how to build them.

    Under DDP every rank prepares its own shard of the missing tracks (``shard=(rank, world)``), then all
    meet and :func:`check_cache` confirms nothing is missing.
    """
    cache_dir = cache_dir_of(cfg)
    missing = _missing(cache_dir, data.train + data.validation)
    if not missing:
        return
    audio_dir, extra_audio = _audio_dirs(cfg)
    extra_ids = {r.track_id for p in cfg.extra_train for r in read_tracks(p)} if cfg.extra_train else set()
    main = [r for r in missing if r.track_id not in extra_ids]
    extra = [r for r in missing if r.track_id in extra_ids]
    train_file, val_file = resolve_split_files(cfg)
    hint = (f"run `focaltag data prepare --tsv {train_file} --tsv {val_file} --audio-dir "
            f"{audio_dir or 'AUDIO_DIR'} --cache {cache_dir}` first (and for each extra training list), or set "
            "data.audio_dir (and data.extra_audio_dir) with data.auto_prepare=true")
    where = f"{len(missing)} of {len(data.train) + len(data.validation)} training/validation tracks are not " \
            f"in the cache {cache_dir} (e.g. {missing[0].track_id})"
    if not cfg.auto_prepare:
        raise DataError(f"{where}; {hint}")
    jobs = [(main, audio_dir, "data.audio_dir"), (extra, extra_audio, "data.extra_audio_dir")]
    for tracks, folder, key in jobs:
        if tracks and (folder is None or not Path(folder).is_dir()):
            raise DataError(f"{where} and {key} ({folder}) is not a folder; {hint}")
    from focaltag.audio.cache import prepare_cache

    for tracks, folder, _ in jobs:
        if tracks and folder is not None:  # checked above: a folder for every part with missing tracks
            log.info("preparing the waveform cache: %d tracks from %s -> %s", len(tracks), folder, cache_dir)
            prepare_cache(tracks, folder, cache_dir, workers=cfg.prepare_workers, shard=shard)


def check_cache(cfg: DataConfig, data: RunData) -> None:
    """Every training and validation track is in the cache (after :func:`prepare_missing`)."""
    cache_dir = cache_dir_of(cfg)
    still = _missing(cache_dir, data.train + data.validation)
    if still:
        raise DataError(f"{len(still)} tracks are not in the cache {cache_dir} (e.g. {still[0].track_id}; see "
                        f"{cache_dir / 'failures.tsv'}); fix their audio or remove them from the lists")


def open_cache(cfg: DataConfig) -> Any:
    """The read-only waveform cache of the run."""
    from focaltag.audio.cache import WaveformCache

    return WaveformCache(cache_dir_of(cfg))
