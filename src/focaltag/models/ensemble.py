"""The one home of ensembles: the weighted mean of sigmoid probabilities, the folder format, the weights rule.

An ensemble folder (written by :func:`save_ensemble`, by ``focaltag models pull`` for catalogue ensembles,
read by everything that takes a model)::

    ensemble.json           # the manifest
    member-00.pt            # slim focaltag checkpoints, one per member (file names: member_file(i))
    member-01.pt

``ensemble.json``::

    {
      "format": "focaltag-ensemble",   # fixed marker
      "version": 1,
      "combine": "mean-sigmoid",       # weighted mean of each member's sigmoid probabilities
      "tag_names": ["mood/theme---action", ...],   # every member must have exactly this list
      "members": [{"path": "member-00.pt", "weight": 1.0}, ...]   # paths relative to the folder
    }

Weights default to 1.0 (the paper's plain mean); the combination is ``sum(w_i p_i) / sum(w_i)``
(:func:`mean_probabilities`), the same for torch tensors (:class:`MeanEnsemble`, the ONNX graph) and numpy
arrays (the tagger's members, which may be onnxruntime sessions).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import torch
from torch import nn

from focaltag.errors import CheckpointError, ConfigError, ModelError
from focaltag.models.facts import embedding_size, logits_and_embedding
from focaltag.models.meta import cfg_of

__all__ = ["ENSEMBLE_MANIFEST", "ENSEMBLE_FORMAT", "EnsembleManifest", "MeanEnsemble", "check_weights",
           "is_ensemble_dir", "mean_probabilities", "member_file", "read_ensemble", "read_manifest",
           "save_ensemble", "write_manifest"]

ENSEMBLE_MANIFEST = "ensemble.json"
ENSEMBLE_FORMAT = "focaltag-ensemble"
_COMBINE = "mean-sigmoid"

T = TypeVar("T")


def member_file(index: int) -> str:
    """The file name of member ``index`` inside an ensemble folder."""
    return f"member-{index:02d}.pt"


def check_weights(weights: Sequence[float] | None, n: int, where: str = "ensemble") -> list[float]:
    """The one weights rule: one finite weight >= 0 per member, not all 0; returned normalised to sum 1.

    ``None`` means equal weights. Raises :class:`ConfigError` (a bad input, exit 2) naming ``where``.
    """
    if weights is None:
        return check_weights([1.0] * n, n, where) if n else []
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weights must be numbers, got {list(weights)!r}") from None
    if len(w) != n:
        raise ConfigError(f"{where}: {n} members but {len(w)} weights; give one weight per member")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError(f"{where}: weights must be finite, >= 0 and not all 0, got {w}")
    arr = np.asarray(w, dtype=np.float64)
    return (arr / arr.sum()).tolist()  # numpy's sum, as the prediction-level ensembles always normalised


def mean_probabilities(probabilities: Iterable[T], weights: Iterable[Any]) -> T:
    """``sum_i weights[i] * probabilities[i]`` for normalised weights: the ensemble's combination rule.

    Works on torch tensors and numpy arrays alike (only ``*`` and ``+``); members are consumed in order, so a
    generator runs one member at a time.
    """
    out: Any = None
    for weight, p in zip(weights, probabilities, strict=True):
        out = weight * p if out is None else out + weight * p
    if out is None:
        raise ModelError("an ensemble needs at least one member")
    return out


class MeanEnsemble(nn.Module):
    """Several torch models as one: the weighted mean of their sigmoid probabilities.

    ``output="logits"`` (default) returns the logits of that mean, so the ensemble is a drop-in model
    (``sigmoid(ensemble(x))`` is what ``focaltag tag -m A -m B`` averages); ``"probabilities"`` returns the mean
    itself (the exported ONNX graph). ``pretrained_cfg`` is the members' (they must agree on tags and input).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None,
                 output: Literal["logits", "probabilities"] = "logits") -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member")
        first = cfg_of(members[0])
        for i, m in enumerate(members[1:], start=1):
            cfg = cfg_of(m)
            if (tuple(cfg.tag_names), cfg.sample_rate, cfg.chunk_samples) != (
                    tuple(first.tag_names), first.sample_rate, first.chunk_samples):
                raise ModelError(f"ensemble member {i} differs from member 0 in tags or input length")
        w = check_weights(weights, len(members), "MeanEnsemble")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32), persistent=False)
        self.pretrained_cfg = first
        self.model_name = "mean_ensemble"
        self.output = output
        self.member_names = list(names or [f"member {i}" for i in range(len(members))])

    def probabilities(self, waveform: torch.Tensor) -> torch.Tensor:
        weights = cast(torch.Tensor, self.weights)
        return mean_probabilities((torch.sigmoid(m(waveform)) for m in self.members), weights)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(waveform)
        return p if self.output == "probabilities" else torch.logit(p)

    def probabilities_and_embedding(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted mean probabilities and the members' embeddings concatenated in member order, in one pass
        over each member (see :func:`focaltag.models.facts.logits_and_embedding`)."""
        weights = cast(torch.Tensor, self.weights)
        pairs = [logits_and_embedding(m, waveform) for m in self.members]
        probabilities = mean_probabilities((torch.sigmoid(logits) for logits, _ in pairs), weights)
        return probabilities, torch.cat([embedding for _, embedding in pairs], dim=1)

    def logits_and_embedding(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`probabilities_and_embedding`, with this ensemble's ``output`` in place of the probabilities."""
        p, embedding = self.probabilities_and_embedding(waveform)
        return (p if self.output == "probabilities" else torch.logit(p)), embedding

    @property
    def embedding_size(self) -> int:
        """The members' embedding sizes summed (their vectors are concatenated)."""
        return sum(embedding_size(m) for m in self.members)


class ProbabilitiesAndEmbedding(nn.Module):
    """A :class:`MeanEnsemble` as an exported graph sees it: waveform -> ``(probabilities, embedding)``."""

    def __init__(self, ensemble: MeanEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.pretrained_cfg = ensemble.pretrained_cfg

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ensemble.probabilities_and_embedding(waveform)


@dataclass(frozen=True)
class EnsembleManifest:
    """What an ensemble folder declares: member files (absolute), raw weights, tag list, member names."""

    paths: tuple[Path, ...]
    weights: tuple[float, ...]
    tag_names: tuple[str, ...] | None
    names: tuple[str | None, ...]


def is_ensemble_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with an ensemble manifest."""
    folder = Path(path)
    return folder.is_dir() and (folder / ENSEMBLE_MANIFEST).is_file()


def write_manifest(directory: str | os.PathLike[str], members: Sequence[Mapping[str, Any]],
                   tag_names: Sequence[str]) -> Path:
    """Write ``ensemble.json``; ``members`` are ``{"path", "weight", ...}`` mappings in member order."""
    from focaltag._io import write_json

    path = Path(directory) / ENSEMBLE_MANIFEST
    check_weights([float(m.get("weight", 1.0)) for m in members], len(members), str(path))
    write_json(path, {"format": ENSEMBLE_FORMAT, "version": 1, "combine": _COMBINE, "tag_names": list(tag_names),
                      "members": [dict(m) for m in members]})
    return path


def read_manifest(directory: str | os.PathLike[str]) -> EnsembleManifest:
    """Parse and check ``directory/ensemble.json``; CheckpointError for a bad manifest, ConfigError for bad
    weights."""
    directory = Path(directory)
    path = directory / ENSEMBLE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {ENSEMBLE_MANIFEST}; write one with "
                              "focaltag.inference.save_ensemble") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{path}: expected \"format\": \"{ENSEMBLE_FORMAT}\"; not a focaltag ensemble manifest")
    if manifest.get("version") != 1:
        raise CheckpointError(f"{path}: unsupported ensemble version {manifest.get('version')!r} (this focaltag reads 1)")
    if manifest.get("combine", _COMBINE) != _COMBINE:
        raise CheckpointError(f"{path}: unknown combine rule {manifest.get('combine')!r}; expected '{_COMBINE}'")
    entries = manifest.get("members")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{path}: \"members\" must be a non-empty list of {{\"path\", \"weight\"}} objects")
    paths: list[Path] = []
    weights: list[Any] = []
    names: list[str | None] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise CheckpointError(f"{path}: members[{i}] needs a \"path\" string")
        member = Path(entry["path"])
        paths.append(member if member.is_absolute() else directory / member)
        weights.append(entry.get("weight", 1.0))
        names.append(entry.get("model") if isinstance(entry.get("model"), str) else None)
    check_weights(weights, len(paths), str(path))
    tags = manifest.get("tag_names")
    return EnsembleManifest(tuple(paths), tuple(float(w) for w in weights), tuple(tags) if tags else None,
                            tuple(names))


def read_ensemble(directory: str | os.PathLike[str]) -> tuple[list[Path], list[float], list[str] | None]:
    """Member paths, weights (as written) and the declared tag list of an ensemble folder."""
    m = read_manifest(directory)
    return list(m.paths), list(m.weights), (list(m.tag_names) if m.tag_names else None)


def save_ensemble(directory: str | os.PathLike[str], members: Sequence[Any],
                  weights: Sequence[float] | None = None) -> Path:
    """Write a self-contained ensemble folder: each member as a slim checkpoint plus ``ensemble.json``.

    ``members`` are torch models or checkpoint files / run folders. Returns the manifest path.
    """
    from focaltag.models._checkpoint import load_model, save_model
    from focaltag.models.meta import check_same_input, model_meta

    if not members:
        raise ConfigError("save_ensemble needs at least one member")
    directory = Path(directory)
    raw = [1.0] * len(members) if weights is None else [float(x) for x in weights]
    check_weights(raw, len(members), str(directory))
    models = [m if hasattr(m, "state_dict") else load_model(m) for m in members]
    check_same_input([model_meta(m) for m in models],
                     [str(m) if not hasattr(m, "state_dict") else f"member {i}" for i, m in enumerate(members)])
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (model, weight) in enumerate(zip(models, raw, strict=True)):
        save_model(model, directory / member_file(i))
        entries.append({"path": member_file(i), "weight": weight})
    return write_manifest(directory, entries, model_meta(models[0]).tag_names)
