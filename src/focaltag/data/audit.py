"""Audit a split: byte-identical tracks (and those leaking across subsets), artists in several subsets, missing
files, untagged tracks."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from focaltag._progress import progress
from focaltag.data.manifest import metadata_path, read_manifest, sha256_file
from focaltag.data.metadata import SUBSETS, TagVocabulary, TrackRecord, read_tracks, split_files
from focaltag.errors import DataError

__all__ = ["audit_split", "audit_tracks", "audit_dataset", "resolve_audio"]

logger = logging.getLogger(__name__)


def resolve_audio(audio_dir: Path, rel: str) -> Path | None:
    """The file of a metadata path under ``audio_dir``: ``48/948.mp3`` or its audio-low name ``48/948.low.mp3``."""
    p = audio_dir / rel
    if p.is_file():
        return p
    low = p.with_name(p.stem + ".low" + p.suffix)
    return low if low.is_file() else None


def _hash_files(paths: Mapping[str, Path], workers: int) -> dict[str, str]:
    """SHA-256 of each file (threads: hashlib releases the GIL on large buffers)."""
    out: dict[str, str] = {}
    keys = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, digest in progress(zip(keys, pool.map(lambda k: sha256_file(paths[k]), keys), strict=True),
                                    desc="hashing audio", total=len(keys), unit="file"):
            out[key] = digest
    return out


def audit_tracks(subsets: Mapping[str, Sequence[TrackRecord]], *, hashes: Mapping[str, str] | None = None,
                 audio_dir: str | os.PathLike[str] | None = None, vocab: TagVocabulary | None = None,
                 workers: int = 4) -> dict[str, Any]:
    """Audit track lists keyed by subset name; returns a JSON-ready report.

    ``hashes`` maps metadata paths (``48/948.mp3``; audio-low names are mapped) to SHA-256; tracks without a
    hash there are hashed from ``audio_dir`` when given. ``vocab`` defaults to the tags of the first subset.
    """
    if not subsets or not any(subsets.values()):
        raise DataError("no tracks to audit; the split lists no tracks")
    first = next(iter(subsets.values()))
    vocab = vocab if vocab is not None else TagVocabulary.from_tracks(first)
    audio_root = Path(audio_dir) if audio_dir is not None else None
    if audio_root is not None and not audio_root.is_dir():
        raise DataError(f"audio folder not found: {audio_root}; pass the folder the PATH column is relative to")
    by_path = {metadata_path(k): v for k, v in (hashes or {}).items()}

    entries = [(name, rec) for name, recs in subsets.items() for rec in recs]
    missing: list[dict[str, str]] = []
    files: dict[str, Path] = {}
    if audio_root is not None:
        for name, rec in entries:
            found = resolve_audio(audio_root, rec.path)
            if found is None:
                missing.append({"track_id": rec.track_id, "subset": name, "path": rec.path})
            elif rec.path not in by_path:
                files[rec.path] = found
    if files:
        logger.info("hashing %d audio files under %s", len(files), audio_root)
        by_path.update(_hash_files(files, workers))

    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    unhashed = 0
    for name, rec in entries:
        digest = by_path.get(rec.path)
        if digest is None:
            unhashed += 1
            continue
        groups[digest].append({"track_id": rec.track_id, "subset": name, "path": rec.path})
    duplicates: list[dict[str, Any]] = []
    for digest, members in groups.items():
        if len(members) > 1:
            subs = sorted({m["subset"] for m in members}, key=lambda s: (list(subsets).index(s), s))
            duplicates.append({"sha256": digest, "subsets": subs, "cross_split": len(subs) > 1, "tracks": members})
    duplicates.sort(key=lambda g: (not g["cross_split"], g["tracks"][0]["track_id"]))
    cross = [g for g in duplicates if g["cross_split"]]

    owners: dict[str, list[str]] = defaultdict(list)
    for name, rec in entries:
        owners[rec.track_id].append(name)
    shared_ids = {tid: subs for tid, subs in owners.items() if len(subs) > 1}
    artists: dict[str, set[str]] = defaultdict(set)
    for name, rec in entries:
        if rec.artist_id:
            artists[rec.artist_id].add(name)
    order = list(subsets)
    shared_artists = {a: sorted(subs, key=order.index) for a, subs in sorted(artists.items()) if len(subs) > 1}
    untagged = [{"track_id": rec.track_id, "subset": name, "path": rec.path}
                for name, rec in entries if not any(t in vocab.tags for t in rec.tags)]
    dup_tracks = sum(len(g["tracks"]) for g in duplicates)
    return {
        "n_tracks": {name: len(recs) for name, recs in subsets.items()},
        "n_tags": len(vocab),
        "hash_source": ("manifest" if hashes else "") + ("+audio" if files else "") or None,
        "n_hashed": len(entries) - unhashed,
        "n_unhashed": unhashed,
        "duplicate_groups": len(duplicates),
        "duplicate_tracks": dup_tracks,
        "redundant_tracks": dup_tracks - len(duplicates),
        "cross_split_groups": len(cross),
        "cross_split_tracks": sum(len(g["tracks"]) for g in cross),
        "cross_split": cross,
        "duplicates": duplicates,
        "track_ids_in_several_subsets": shared_ids,
        "n_artists": len(artists) if artists else None,
        "artists_in_several_subsets": shared_artists,
        "missing_files": missing,
        "n_missing_files": len(missing) if audio_root is not None else None,
        "untagged": untagged,
        "n_untagged": len(untagged),
    }


def audit_split(split_dir: str | os.PathLike[str], *, manifest: str | os.PathLike[str] | None = None,
                audio_dir: str | os.PathLike[str] | None = None, split: int = 0,
                dataset: str = "autotagging_moodtheme", vocab: TagVocabulary | None = None,
                workers: int = 4) -> dict[str, Any]:
    """Audit the train/validation/test files of an official split folder (see :func:`audit_tracks`)."""
    if manifest is None and audio_dir is None:
        raise DataError("duplicates need track hashes: pass a tracks manifest (e.g. "
                        f"{dataset}_audio-low_sha256_tracks.txt) or the audio folder to hash")
    files = split_files(split_dir, split, dataset)
    subsets = {name: read_tracks(files[name], allow_untagged=True) for name in SUBSETS}
    hashes = read_manifest(manifest) if manifest is not None else None
    report = audit_tracks(subsets, hashes=hashes, audio_dir=audio_dir, vocab=vocab, workers=workers)
    report["files"] = {name: str(files[name]) for name in SUBSETS}
    if manifest is not None:
        report["manifest"] = str(manifest)
        if report["n_unhashed"]:
            logger.warning("%d track(s) of the split are not in %s%s", report["n_unhashed"], manifest,
                           "" if audio_dir else "; pass --audio-dir to hash them")
    return report


def audit_dataset(dataset: Any, *, manifest: str | os.PathLike[str] | None = None,
                  audio_dir: str | os.PathLike[str] | None = None, workers: int = 4) -> dict[str, Any]:
    """Audit the three parts of an opened :class:`focaltag.data.dataset.Dataset` (either layout).

    Hashes come from ``manifest`` and from the audio (``audio_dir``, default the dataset's own audio folder when
    it exists); with neither, duplicates are not looked for but everything else is checked.
    """
    audio = Path(audio_dir) if audio_dir is not None else dataset.audio_dir
    if audio_dir is None and not audio.is_dir():
        audio = None
    subsets = {name: dataset.tracks(name) for name in SUBSETS}
    hashes = read_manifest(manifest) if manifest is not None else None
    report = audit_tracks(subsets, hashes=hashes, audio_dir=audio, vocab=dataset.vocabulary(), workers=workers)
    report["dataset"] = {"root": str(dataset.root), "kind": dataset.kind, "tagset": dataset.tagset,
                         "split": dataset.split}
    report["files"] = {name: str(dataset.files[name]) if dataset.kind == "mtg" else str(dataset.label)
                       for name in SUBSETS}
    if manifest is not None:
        report["manifest"] = str(manifest)
    if audio is None and manifest is None:
        logger.warning("no audio folder (%s) and no --manifest: duplicate tracks were not looked for",
                       dataset.audio_dir)
    return report
