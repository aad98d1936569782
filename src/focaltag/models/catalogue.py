"""The catalogue of published checkpoints: the entries and their lookup (pulling and caching: :mod:`.hub`).

The entries are data (``catalogue.json`` beside this file, shipped in the package): for each model its
architecture, the GitHub repository, commit, path and git blob id of the published file, licence, citation,
training data, tag names in output order, front end, input length, published metrics and, for some, calibrated
decision thresholds. This module parses and checks them and finds one by name; :mod:`focaltag.models.hub`
fetches, verifies, converts and caches the files, and :func:`focaltag.models.resolve.resolve_model` turns a
name into its cached model and brings the entry's tag names and thresholds wherever a model is accepted.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focaltag._defaults import DEFAULT_MODEL  # what 'focaltag tag' uses without --model
from focaltag.data.pinned import Pin
from focaltag.errors import DownloadError, ModelError

__all__ = ["CATALOGUE_FILE", "DEFAULT_MODEL", "CatalogueEntry", "read_catalogue", "catalogue", "get_entry"]

CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")


@dataclass(frozen=True)
class CatalogueEntry:
    """One published model (``kind`` "checkpoint") or a mean ensemble of catalogue models ("ensemble")."""

    name: str
    kind: str
    description: str
    repo: str
    commit: str
    licence: str
    citation: str
    training_data: str
    tag_set: str
    tag_names: tuple[str, ...]
    front_end: Mapping[str, Any]
    input: Mapping[str, Any]
    metrics: Mapping[str, Any]
    architecture: Mapping[str, Any] | None = None
    path: str | None = None
    blob: str | None = None
    size: int | None = None
    members: tuple[str, ...] = ()
    thresholds: Mapping[str, float] | None = None
    thresholds_info: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pin(self) -> Pin:
        if self.path is None or self.blob is None:
            raise ModelError(f"{self.name} is an ensemble; its members have the pins")
        return Pin(self.repo, self.commit, self.path, self.blob, self.size)

    def to_dict(self) -> dict[str, Any]:
        """Everything the catalogue knows, tag names spelled out (``models info --json``)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "description": self.description}
        if self.kind == "ensemble":
            out["members"] = list(self.members)
            out["combine"] = "mean of the members' sigmoid probabilities"
        else:
            out["architecture"] = dict(self.architecture or {})
        out.update(repo=self.repo, commit=self.commit)
        if self.kind == "checkpoint":
            out.update(path=self.path, blob=self.blob, size=self.size, url=f"https://github.com/{self.repo}/blob/"
                       f"{self.commit}/{self.path}")
        out.update(licence=self.licence, citation=self.citation, training_data=self.training_data,
                   front_end=dict(self.front_end), input=dict(self.input), metrics=dict(self.metrics),
                   tag_set=self.tag_set, tag_names=list(self.tag_names))
        if self.thresholds is not None:
            out["thresholds"] = dict(self.thresholds)
            out["thresholds_info"] = dict(self.thresholds_info or {})
        return out


_REQUIRED = ("name", "kind", "description", "repo", "commit", "licence", "citation", "training_data", "tags",
             "front_end", "input", "metrics")


def _entry(raw: Mapping[str, Any], tag_sets: Mapping[str, Sequence[str]], where: Path) -> CatalogueEntry:
    missing = [k for k in _REQUIRED if k not in raw]
    if raw.get("kind") == "checkpoint":
        missing += [k for k in ("architecture", "path", "blob") if k not in raw]
    elif raw.get("kind") == "ensemble":
        missing += [k for k in ("members",) if k not in raw]
    else:
        raise ModelError(f"{where}: entry {raw.get('name')!r} has kind {raw.get('kind')!r}; expected "
                         "'checkpoint' or 'ensemble'")
    if missing:
        raise ModelError(f"{where}: entry {raw.get('name')!r} lacks {', '.join(missing)}")
    if raw["tags"] not in tag_sets:
        raise ModelError(f"{where}: entry {raw['name']!r} names unknown tag set {raw['tags']!r}")
    names = tuple(tag_sets[raw["tags"]])
    thresholds = raw.get("thresholds")
    if thresholds is not None and list(thresholds) != list(names):
        raise ModelError(f"{where}: thresholds of {raw['name']!r} must list its tags in output order")
    known = {*_REQUIRED, "architecture", "path", "blob", "size", "members", "thresholds", "thresholds_info",
             "combine"}
    entry = CatalogueEntry(
        name=raw["name"], kind=raw["kind"], description=raw["description"], repo=raw["repo"],
        commit=raw["commit"], licence=raw["licence"], citation=raw["citation"],
        training_data=raw["training_data"], tag_set=raw["tags"], tag_names=names, front_end=raw["front_end"],
        input=raw["input"], metrics=raw["metrics"], architecture=raw.get("architecture"), path=raw.get("path"),
        blob=raw.get("blob"), size=raw.get("size"), members=tuple(raw.get("members", ())),
        thresholds=None if thresholds is None else {k: float(v) for k, v in thresholds.items()},
        thresholds_info=raw.get("thresholds_info"), extra={k: v for k, v in raw.items() if k not in known})
    if entry.kind == "checkpoint":
        try:
            entry.pin  # noqa: B018  (validates repo, commit, blob and path)
        except DownloadError as err:
            raise ModelError(f"{where}: entry {entry.name!r}: {err}") from None
    return entry


def read_catalogue(path: str | os.PathLike[str] = CATALOGUE_FILE) -> dict[str, CatalogueEntry]:
    """Parse and check a catalogue file: name -> entry, in file order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the model catalogue {path} ({err}); reinstall focaltag") from None
    if data.get("format") != "focaltag-catalogue" or data.get("version") != 1:
        raise ModelError(f"{path}: not a focaltag model catalogue of version 1")
    entries: dict[str, CatalogueEntry] = {}
    for raw in data.get("models", []):
        entry = _entry(raw, data.get("tag_sets", {}), path)
        if entry.name in entries:
            raise ModelError(f"{path}: model {entry.name!r} is listed twice")
        entries[entry.name] = entry
    for entry in entries.values():
        for member in entry.members:
            m = entries.get(member)
            if m is None or m.kind != "checkpoint":
                raise ModelError(f"{path}: ensemble {entry.name!r} names {member!r}, which is not a checkpoint "
                                 "entry")
            if m.tag_names != entry.tag_names:
                raise ModelError(f"{path}: member {member!r} of {entry.name!r} has other tags than the ensemble")
    return entries


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, CatalogueEntry]:
    """The shipped catalogue (read once)."""
    return read_catalogue(CATALOGUE_FILE)


def get_entry(name: str) -> CatalogueEntry:
    """The entry called ``name``; ModelError naming close matches and ``focaltag models list`` otherwise."""
    entries = catalogue()
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelError(f"unknown catalogue model {name!r}; {hint}see 'focaltag models list'")
