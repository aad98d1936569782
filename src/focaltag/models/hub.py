"""The model hub: the cache of converted catalogue models, and pull / import into it.

``pull`` fetches a catalogue entry's file from the pinned commit (or a mirror with the same layout), checks its
blob id before anything is cached, converts it with the one converter (``load_model`` + ``save_model``, as
``import-reference`` does) and keeps the result in ``<cache>/models/NAME/``: ``best.pt`` (so the folder loads
like a run folder) or, for an ensemble, ``ensemble.json`` and its members (loadable like any ensemble folder),
plus ``source.json`` (the provenance; written last, so it marks a finished pull) and ``thresholds.tsv`` where
the entry has thresholds. ``import_files`` does the same with files the user got elsewhere. A lock file per
model (:mod:`focaltag._locks`) keeps two processes from pulling the same model at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from focaltag._cache import cache_root
from focaltag._io import write_json, write_text
from focaltag._locks import locked
from focaltag.data.pinned import fetch_pinned, verify_pinned
from focaltag.errors import CheckpointError, DownloadError, ModelError
from focaltag.models import _checkpoint
from focaltag.models.catalogue import CatalogueEntry, get_entry
from focaltag.models.ensemble import is_ensemble_dir, member_file, write_manifest
from focaltag.models.meta import cfg_of

__all__ = ["MIRROR_ENV", "models_dir", "model_dir", "is_pulled", "cached_path", "how_to_get", "convert", "pull",
           "import_files"]

logger = logging.getLogger(__name__)

MIRROR_ENV = "FOCALTAG_MODEL_MIRROR"
SOURCE_FILE = "source.json"
CHECKPOINT_FILE = "best.pt"
THRESHOLDS_FILE = "thresholds.tsv"


# --------------------------------------------------------------------------------------------- cache


def models_dir() -> Path:
    """``<cache>/models`` with ``<cache>`` = ``$FOCALTAG_CACHE_DIR`` or ``$XDG_CACHE_HOME/focaltag``."""
    return cache_root() / "models"


def model_dir(name: str) -> Path:
    """The cache folder of catalogue model ``name`` (whether or not it is pulled)."""
    return models_dir() / get_entry(name).name


def _source_record(entry: CatalogueEntry) -> dict[str, Any]:
    record: dict[str, Any] = {"name": entry.name, "kind": entry.kind, "repo": entry.repo, "commit": entry.commit}
    if entry.kind == "checkpoint":
        record.update(path=entry.path, blob=entry.blob, size=entry.size)
    else:
        record["members"] = list(entry.members)
    record.update(licence=entry.licence, citation=entry.citation)
    return record


def is_pulled(name: str) -> bool:
    """True when the cache holds a finished pull of exactly this entry (same pins)."""
    entry = get_entry(name)
    folder = model_dir(name)
    try:
        record = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record != _source_record(entry):
        return False
    if entry.kind == "ensemble":
        return is_ensemble_dir(folder) and all(
            (folder / member_file(i)).is_file() for i in range(len(entry.members)))
    return (folder / CHECKPOINT_FILE).is_file()


def cached_path(name: str) -> Path:
    """What a model spec resolves to: the ensemble folder, or the converted checkpoint file."""
    entry = get_entry(name)
    folder = model_dir(name)
    return folder if entry.kind == "ensemble" else folder / CHECKPOINT_FILE


def _lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on ``folder/.lock`` so two processes do not pull the same model at once."""
    folder.mkdir(parents=True, exist_ok=True)
    return locked(folder / ".lock")


def how_to_get(name: str) -> str:
    """The one-line fix when a model is not cached and cannot be fetched."""
    entry = get_entry(name)
    paths = [get_entry(m).path or "" for m in entry.members] if entry.kind == "ensemble" else [entry.path or ""]
    files = paths[0] if len(paths) == 1 else _brace(paths)
    many = "..., one per member in order" if len(paths) > 1 else ""
    return (f"run 'focaltag models pull {name}' where GitHub is reachable (--mirror URL or {MIRROR_ENV} for a "
            f"mirror), or get {files} of {entry.repo} at commit {entry.commit[:12]} and run "
            f"'focaltag models import {name} FILE{many}'")


def _brace(paths: Sequence[str]) -> str:
    """``a/{x,y}/b`` for paths that differ in one middle part."""
    prefix = os.path.commonprefix(list(paths))
    suffix = os.path.commonprefix([p[len(prefix):][::-1] for p in paths])[::-1]
    middles = [p[len(prefix):len(p) - len(suffix)] for p in paths]
    return f"{prefix}{{{','.join(middles)}}}{suffix}"


# --------------------------------------------------------------------------------------------- converting


def convert(entry: CatalogueEntry, raw: str | os.PathLike[str]) -> nn.Module:
    """The one converter: a published file -> a focaltag model with the entry's tag names, checked against it."""
    model = _checkpoint.load_model(raw, tag_names=entry.tag_names)
    cfg = cfg_of(model)
    arch = dict(entry.architecture or {})
    expected = {"model": arch.get("name"), "sample_rate": entry.front_end.get("sample_rate"),
                "chunk_samples": entry.input.get("samples"), "n_mels": entry.front_end.get("n_mels")}
    got = {"model": getattr(model, "model_name", None), "sample_rate": cfg.sample_rate,
           "chunk_samples": cfg.chunk_samples, "n_mels": cfg.n_mels}
    wrong = [f"{k} {got[k]} (expected {v})" for k, v in expected.items() if v is not None and got[k] != v]
    variant = arch.get("args", {}).get("variant")
    if variant is not None and cfg.variant != variant:
        wrong.append(f"variant {cfg.variant} (expected {variant})")
    if wrong:
        raise CheckpointError(f"{raw}: the converted model does not match catalogue entry {entry.name}: "
                              f"{'; '.join(wrong)}")
    return model


def _install_checkpoint(entry: CatalogueEntry, raw: Path, folder: Path) -> None:
    """Convert a verified raw file into ``folder/best.pt`` and write the entry's side files."""
    model = convert(entry, raw)
    _checkpoint.save_model(model, folder / CHECKPOINT_FILE, catalogue=_source_record(entry))
    _write_side_files(entry, folder)


def _write_side_files(entry: CatalogueEntry, folder: Path) -> None:
    if entry.thresholds is not None:
        write_text(folder / THRESHOLDS_FILE, "".join(f"{t}\t{v!r}\n" for t, v in entry.thresholds.items()))
    write_json(folder / SOURCE_FILE, _source_record(entry))  # last: it marks the pull as finished


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _install_ensemble(entry: CatalogueEntry, folder: Path) -> None:
    """``folder`` = the members' converted checkpoints + an ``ensemble.json`` in the ensemble folder format."""
    members = []
    for i, member in enumerate(entry.members):
        _link_or_copy(cached_path(member), folder / member_file(i))
        members.append({"path": member_file(i), "weight": 1.0, "model": member})
    write_manifest(folder, members, entry.tag_names)
    _write_side_files(entry, folder)


# --------------------------------------------------------------------------------------------- pull / import


def _mirror(mirror: str | None) -> str | None:
    return mirror or os.environ.get(MIRROR_ENV) or None


def pull(name: str, *, mirror: str | None = None, retries: int = 3, backoff: float = 1.0,
         timeout: float = 60.0, deadline: float | None = None, _how: str | None = None,
         _label: str | None = None) -> Path:
    """Fetch, verify, convert and cache ``name`` (and, for an ensemble, its members); returns its cache path.

    Does nothing when the cache already holds it. ``mirror`` (or ``$FOCALTAG_MODEL_MIRROR``) replaces
    https://raw.githubusercontent.com; it serves ``<mirror>/<owner>/<repo>/<commit>/<path>``.
    """
    entry = get_entry(name)
    if is_pulled(name):
        return cached_path(name)
    base = _mirror(mirror)
    if entry.kind == "ensemble":
        for member in entry.members:
            pull(member, mirror=base, retries=retries, backoff=backoff, timeout=timeout, deadline=deadline,
                 _how=how_to_get(name),
                 _label=f"{name} (member {member})")
        folder = model_dir(name)
        with _lock(folder):
            if not is_pulled(name):
                _install_ensemble(entry, folder)
        return cached_path(name)
    folder = model_dir(name)
    with _lock(folder):
        if is_pulled(name):
            return cached_path(name)
        raw = folder / "download" / Path(entry.path or "model.pth").name
        logger.info("fetching %s from %s", name, base or "github")
        try:
            how = _how or how_to_get(name)
            fetch_pinned(entry.pin, raw, base=base, retries=retries, backoff=backoff, timeout=timeout,
                         deadline=deadline, hint=how if base is None else f"check the mirror, or {how}", desc=name)
        except DownloadError as err:
            raise DownloadError(f"cannot fetch model {_label or name}: {err}") from None
        _install_checkpoint(entry, raw, folder)
        shutil.rmtree(folder / "download", ignore_errors=True)
    logger.debug("%s is cached in %s", name, folder)
    return cached_path(name)


def import_files(name: str, files: Sequence[str | os.PathLike[str]]) -> Path:
    """Check files the user got elsewhere against the pins (one per member, in member order) and cache them."""
    entry = get_entry(name)
    targets = [get_entry(m) for m in entry.members] if entry.kind == "ensemble" else [entry]
    if len(files) != len(targets):
        order = ", ".join(f"{t.name} ({t.path})" for t in targets)
        raise ModelError(f"models import {name}: expected {len(targets)} file(s), one per member in this order: "
                         f"{order}; got {len(files)}")
    paths = [Path(f) for f in files]
    for target, path in zip(targets, paths, strict=True):
        if not path.is_file():
            raise ModelError(f"models import {name}: file not found: {path}")
        try:
            verify_pinned(path, target.pin)
        except DownloadError as err:
            raise ModelError(f"models import {name}: {err}") from None
    for target, path in zip(targets, paths, strict=True):
        folder = model_dir(target.name)
        with _lock(folder):
            if not is_pulled(target.name):
                _install_checkpoint(target, path, folder)
    if entry.kind == "ensemble":
        folder = model_dir(name)
        with _lock(folder):
            _install_ensemble(entry, folder)
    return cached_path(name)
