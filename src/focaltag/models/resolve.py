"""The one model resolver: a model spec -> its member networks and the defaults that travel with it.

A spec is a loaded torch model, a path (checkpoint, run folder, ensemble folder, ``.onnx`` file) or a catalogue
name given as a string. :func:`resolve_model` decides what each spec is exactly once, pulls catalogue models on
first use, expands ensemble folders into their members, and returns a :class:`ResolvedModel`: the members with
their weights, the display name (``"model"`` in ``focaltag tag --format json``), and a catalogue model's tag
names and calibrated decision thresholds. Everything that takes a model goes through it: ``focaltag tag``,
``serve``, the beets plugin, :class:`focaltag.Tagger` and :func:`focaltag.load_model`.

Naming: a model's *label* is what results report (the catalogue name, else the file or folder name);
``model_name`` on a network is its architecture (``short_chunk_resnet``, ``fcn``...).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from focaltag.errors import CheckpointError
from focaltag.models import _checkpoint

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec", "ModelSpecs", "MemberSource", "ResolvedModel", "resolve_model", "resolve_path", "combine",
           "load_model", "load_matching_weights"]

ModelSpec: TypeAlias = "str | os.PathLike[str] | nn.Module"
"""A loaded model, a path, or a catalogue name (a ``str`` naming no existing file)."""
ModelSpecs: TypeAlias = "ModelSpec | Sequence[ModelSpec]"

_HOW = ("pass a checkpoint (.pt), a run folder, an ensemble folder, an .onnx file or a catalogue name "
        "('focaltag models list')")


@dataclass(frozen=True)
class MemberSource:
    """One network of a resolved model: a file to load (``path``) or an already loaded object (``model``), and
    its weight as declared (1.0, or the ensemble manifest's); :attr:`ResolvedModel.weights` normalises them."""

    name: str
    weight: float
    path: Path | None = None
    model: Any = None

    def load(self) -> nn.Module:
        """The member's network: the loaded object, or its checkpoint read from ``path`` (nothing is resolved
        again: the path is already a checkpoint file or run folder)."""
        if self.path is None:
            module: nn.Module = self.model
            return module
        return _checkpoint.load_model(self.path)


@dataclass(frozen=True)
class ResolvedModel:
    """What a spec (or several, averaged) resolved to; see :func:`resolve_model`."""

    members: tuple[MemberSource, ...]
    label: str
    catalogue_name: str | None = None
    tag_names: tuple[str, ...] | None = None
    thresholds: Mapping[str, float] | None = None

    @property
    def weights(self) -> list[float]:
        """The members' weights normalised to sum 1 (the one rule: :func:`~focaltag.models.ensemble.check_weights`)."""
        from focaltag.models.ensemble import check_weights

        return check_weights([m.weight for m in self.members], len(self.members), self.label)

    def with_loaded_members(self) -> ResolvedModel:
        """The same model with its torch checkpoints loaded into memory, so several taggers built from it share
        one copy of each network (``.onnx`` members stay files: onnxruntime opens them)."""
        members = tuple(m if m.path is None or m.path.suffix.lower() == ".onnx"
                        else MemberSource(m.name, m.weight, model=m.load()) for m in self.members)
        return dataclasses.replace(self, members=members)


def combine(models: Sequence[ResolvedModel], label: str | None = None) -> ResolvedModel:
    """Several resolved models averaged as one (all their members, declared weights); no catalogue defaults."""
    return ResolvedModel(members=tuple(m for model in models for m in model.members),
                         label=label or "+".join(model.label for model in models))


def _is_loaded(spec: Any) -> bool:
    return not isinstance(spec, (str, os.PathLike))


def catalogue_name_of(spec: ModelSpec) -> str | None:
    """The catalogue name ``spec`` stands for: a ``str`` that names an entry and no existing file, or a model
    loaded from the catalogue (``load_model(name)`` marks it); else None."""
    from focaltag.models.catalogue import catalogue

    if isinstance(spec, str):
        return spec if spec in catalogue() and not Path(spec).exists() else None
    if _is_loaded(spec):
        name = getattr(spec, "catalogue_name", None)
        return name if isinstance(name, str) and name in catalogue() else None
    return None


def resolve_path(spec: str | os.PathLike[str]) -> Path:
    """A path spec as a Path, or a catalogue name as its cached path (pulled on first use)."""
    name = catalogue_name_of(spec) if isinstance(spec, str) else None
    if name is not None:
        from focaltag.models.hub import cached_path, is_pulled, pull

        return cached_path(name) if is_pulled(name) else pull(name)
    return Path(spec)


def _label(spec: ModelSpec) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        return str(getattr(spec, "catalogue_name", None) or getattr(spec, "model_name", None)
                   or type(spec).__name__)
    return Path(os.fspath(spec)).name


def _sources(spec: ModelSpec, index: int, catalogue_name: str | None) -> list[MemberSource]:
    """One spec -> its member sources (an ensemble folder expands to its members); ``catalogue_name`` is what
    :func:`catalogue_name_of` said of it."""
    from focaltag.models.ensemble import ENSEMBLE_MANIFEST, is_ensemble_dir, read_manifest

    if not isinstance(spec, (str, os.PathLike)):
        return [MemberSource(name=f"model {index}", weight=1.0, model=spec)]
    if catalogue_name is not None:
        from focaltag.models.hub import cached_path, is_pulled, pull

        path = cached_path(catalogue_name) if is_pulled(catalogue_name) else pull(catalogue_name)
    else:
        path = Path(spec)
    if not path.exists():
        hint = "" if isinstance(spec, str) else " (a catalogue name is given as a str, not a Path)"
        raise CheckpointError(f"model not found: {path}; {_HOW}{hint}")
    if is_ensemble_dir(path):
        manifest = read_manifest(path)
        missing = [p for p in manifest.paths if not p.exists()]
        if missing:
            raise CheckpointError(f"{path / ENSEMBLE_MANIFEST}: member {missing[0]} does not exist")
        return [MemberSource(name=str(p), weight=w, path=p)
                for p, w in zip(manifest.paths, manifest.weights, strict=True)]
    return [MemberSource(name=str(path), weight=1.0, path=path)]


def resolve_model(specs: ModelSpecs) -> ResolvedModel:
    """Resolve one spec or a list of specs (averaged) into members, weights and their defaults.

    A single catalogue model brings its tag names and, where the catalogue has them, its calibrated decision
    thresholds (``thresholds``); several specs averaged together have none (their thresholds were calibrated
    for each model alone). Weights are normalised to sum 1 (:func:`focaltag.models.ensemble.check_weights`).
    """
    from focaltag.errors import ConfigError
    from focaltag.models.ensemble import check_weights

    items: list[ModelSpec] = ([specs] if isinstance(specs, (str, os.PathLike)) or not isinstance(specs, Sequence)
                              else list(specs))
    if not items:
        raise ConfigError(f"no model given; {_HOW}")
    names = [catalogue_name_of(spec) for spec in items]  # the one "is this a catalogue name?" per spec
    # focaltag head: a name that is no catalogue model may be a head imported by that name
    items = [spec if n is not None else _imported_head(spec) for spec, n in zip(items, names, strict=True)]
    members = tuple(s for i, (spec, n) in enumerate(zip(items, names, strict=True)) for s in _sources(spec, i, n))
    check_weights([s.weight for s in members], len(members), "ensemble")
    name = names[0] if len(items) == 1 else None
    tag_names = thresholds = None
    if name is not None:
        from focaltag.models.catalogue import get_entry

        entry = get_entry(name)
        tag_names = entry.tag_names
        thresholds = None if entry.thresholds is None else dict(entry.thresholds)
    elif len(items) == 1 and isinstance(items[0], (str, os.PathLike)):  # focaltag head: a head folder's own
        from focaltag.models.head import head_thresholds

        thresholds = head_thresholds(items[0])
    return ResolvedModel(members=members, label="+".join(_label(s) for s in items), catalogue_name=name,
                         tag_names=tag_names, thresholds=thresholds)


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """``focaltag.load_model``: a checkpoint, run folder, reference state_dict, ensemble folder or catalogue name.

    A catalogue name is pulled on first use; an ensemble (name or folder) gives a
    :class:`~focaltag.models.ensemble.MeanEnsemble`. Other arguments are those of
    :func:`focaltag.models._checkpoint.load_model`.
    """
    from focaltag.models.ensemble import MeanEnsemble, is_ensemble_dir, read_manifest

    resolved = resolve_path(path if catalogue_name_of(path) is not None else _imported_head(path))
    model: nn.Module
    if is_ensemble_dir(resolved):
        manifest = read_manifest(resolved)
        members = [_checkpoint.load_model(p, **kwargs) for p in manifest.paths]
        model = MeanEnsemble(members, manifest.weights, names=[str(p) for p in manifest.paths]).eval()
    else:
        model = _checkpoint.load_model(resolved, **kwargs)
    name = catalogue_name_of(path)
    if name is not None:
        setattr(model, "catalogue_name", name)  # noqa: B010  (what 'tag --format json' reports as "model")
    return model


load_model.__doc__ = (load_model.__doc__ or "") + "\n" + (_checkpoint.load_model.__doc__ or "")


def _imported_head(spec: Any) -> Any:
    """focaltag head: a name given to ``focaltag models import NAME HEAD_FOLDER`` (no file of that name; the caller
    has found no catalogue model of it) stands for the imported folder; any other spec is returned as it is."""
    if isinstance(spec, str) and not Path(spec).exists():
        from focaltag.models.head import imported_head

        folder = imported_head(spec)
        if folder is not None:
            return folder
    return spec


def load_matching_weights(model: nn.Module, path: str | os.PathLike[str], **kwargs: Any
                          ) -> tuple[list[str], list[tuple[str, str]]]:
    """``--init-from`` / ``model.init_from``: as :func:`_checkpoint.load_matching_weights`, names allowed."""
    return _checkpoint.load_matching_weights(model, resolve_path(path), **kwargs)
