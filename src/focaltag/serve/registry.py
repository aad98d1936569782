"""The models a server answers with: each ``-m`` loaded once at start, plus ``ensemble`` (their mean).

Each ``-m`` is resolved once (:func:`focaltag.models.resolve.resolve_model`: catalogue names, ensemble folders) and
loaded once into a :class:`~focaltag.inference.Predictor`; the ensemble averages those predictors without loading
anything again, and a request's variant (another ``chunks``) is a tagger over the same predictor with
``dataclasses.replace``-d options. So no request ever loads a second copy of a model. A catalogue model brings
its own decision thresholds, as in ``focaltag tag``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focaltag.errors import ConfigError, ModelError
from focaltag.inference import InferenceOptions, Predictor, Tagger
from focaltag.models.resolve import catalogue_name_of, resolve_model

__all__ = ["ModelRegistry", "ENSEMBLE", "model_name"]

logger = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
_GENERIC_STEMS = {"best", "last", "model", "checkpoint", "final"}
_MAX_VARIANTS = 32


def model_name(spec: str | Path) -> str:
    """A short public name for a model spec: a catalogue name as it is, else the file stem (its folder's name for
    ``best.pt`` and the like)."""
    if isinstance(spec, str) and catalogue_name_of(spec) is not None:
        return spec
    path = Path(spec)
    stem = path.stem if path.is_file() else path.name
    if stem in _GENERIC_STEMS and path.parent.name:
        stem = f"{path.parent.name}-{stem}"
    return stem


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = ENSEMBLE + "-model" if name == ENSEMBLE else name
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


@dataclass(frozen=True)
class _Entry:
    name: str
    tagger: Tagger
    members: int


class ModelRegistry:
    """Taggers by name, built once; :meth:`tagger` hands out per-request variants that share their networks.

    Args:
        specs: ``-m`` values (checkpoints, run folders, ensemble folders, catalogue names).
        options: the server's :class:`~focaltag.inference.InferenceOptions` (``thresholds="auto"``: each
            catalogue model's own, none for the others and the ensemble).
    """

    def __init__(self, specs: Sequence[str | Path], options: InferenceOptions | None = None) -> None:
        if not specs:
            raise ConfigError("serve: no model given; pass a checkpoint with -m MODEL")
        options = options or InferenceOptions()
        self._lock = threading.Lock()
        self._variants: OrderedDict[tuple[str, int], Tagger] = OrderedDict()
        predictors = [Predictor.load(resolve_model(spec), options) for spec in specs]
        self._entries: dict[str, _Entry] = {}
        for name, predictor in zip(_unique([model_name(s) for s in specs]), predictors, strict=True):
            self._entries[name] = _Entry(name, Tagger(predictor, options), len(predictor.members))
        if len(predictors) > 1:
            try:
                ensemble = Predictor.combine(predictors)
            except ModelError as err:  # different tag lists: each model still answers by its own name
                logger.warning("serve: no '%s' of the models (%s); pick a model by name", ENSEMBLE, err)
            else:
                self._entries[ENSEMBLE] = _Entry(ENSEMBLE, Tagger(ensemble, options), len(ensemble.members))
        self.default = ENSEMBLE if ENSEMBLE in self._entries else next(iter(self._entries))

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def resolve(self, name: str | None) -> str:
        """The entry name for a request's ``model`` (empty or ``ensemble``: the default)."""
        if not name or (name == ENSEMBLE and ENSEMBLE not in self._entries):
            return self.default
        if name not in self._entries:
            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(self._entries)} "
                              "(GET /api/v1/models lists them)")
        return name

    def tagger(self, name: str | None, n_chunks: int | None = None) -> Tagger:
        """The tagger of ``name``; with ``n_chunks`` a variant over the same networks, that many chunks, fixed."""
        entry = self._entries[self.resolve(name)]
        if n_chunks is None or n_chunks == entry.tagger.n_chunks:
            return entry.tagger
        if not 1 <= n_chunks <= 256:
            raise ConfigError(f"chunks must be 1..256, got {n_chunks}")
        key = (entry.name, n_chunks)
        with self._lock:
            variant = self._variants.get(key)
            if variant is None:  # a request that names its chunks gets exactly that many
                variant = entry.tagger.with_options(n_chunks=n_chunks, adaptive=False)
                self._variants[key] = variant
                while len(self._variants) > _MAX_VARIANTS:
                    self._variants.popitem(last=False)
            else:
                self._variants.move_to_end(key)
            return variant

    def describe(self) -> list[dict[str, Any]]:
        """What ``GET /api/v1/models`` shows: names, tags, input length, thresholds; never a path."""
        out = []
        for entry in self._entries.values():
            tagger = entry.tagger
            out.append({
                "name": entry.name,
                "default": entry.name == self.default,
                "members": entry.members,
                "tags": list(tagger.tag_names),
                "n_tags": len(tagger.tag_names),
                "sample_rate": int(tagger.sample_rate),
                "input_samples": int(tagger.chunk_samples),
                "input_seconds": round(tagger.chunk_samples / tagger.sample_rate, 3),
                "chunks": int(tagger.n_chunks),
                "has_thresholds": tagger.thresholds is not None,
            })
        return out
