"""The models a server answers with: each ``-m`` loaded once at start, plus ``ensemble`` (their mean).

Each ``-m`` is resolved once by :func:`focaltag.models.resolve.resolve_model` (catalogue names, ensemble
folders), its checkpoints loaded into memory, and the same module objects are shared by its own tagger, the
ensemble tagger and every per-request variant (another ``chunks``), so no request ever loads a second copy of a
model. A catalogue model brings its own decision thresholds, as in ``focaltag tag``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from focaltag.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from focaltag.inference.tagger import Thresholds

__all__ = ["ModelRegistry", "ENSEMBLE", "model_name"]

logger = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
_GENERIC_STEMS = {"best", "last", "model", "checkpoint", "final"}
_MAX_VARIANTS = 32


def model_name(spec: str | Path) -> str:
    """A short public name for a model spec: the file stem (its folder's name for ``best.pt`` and the like)."""
    text = str(spec)
    path = Path(text)
    if not path.exists():
        return text  # a catalogue name
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
    tagger: Any
    members: int


class ModelRegistry:
    """Taggers by name, built once; :meth:`tagger` hands out per-request variants that share their models.

    Args:
        specs: ``-m`` values (checkpoints, run folders, ensemble folders, catalogue names).
        n_chunks: default evenly spaced chunks per track (as ``focaltag tag``).
        thresholds: ``"auto"`` (each catalogue model's own, none for the others and the ensemble), None (no
            decisions), or a thresholds file or mapping for every model (see :class:`~focaltag.inference.Tagger`).
        device: torch device.
        precision: passed to the Tagger when given (and when the installed Tagger supports it).
    """

    def __init__(self, specs: Sequence[str | Path], *, n_chunks: int = 16, thresholds: Thresholds = "auto",
                 device: str = "cpu", precision: str | None = None, adaptive: bool = False) -> None:
        from focaltag.inference import Tagger
        from focaltag.models.resolve import combine, resolve_model

        if not specs:
            raise ConfigError("serve: no model given; pass a checkpoint with -m MODEL")
        options: dict[str, Any] = {"n_chunks": n_chunks, "thresholds": thresholds, "device": device}
        if adaptive:  # adaptive chunking (serve --chunks auto); a request's own chunks run the fixed protocol
            options["adaptive"] = True
        if precision is not None:
            if "precision" not in inspect.signature(Tagger).parameters:
                raise ConfigError("serve: --precision is not supported by this focaltag's Tagger; leave it out")
            options["precision"] = precision
        self._lock = threading.Lock()
        self._variants: OrderedDict[tuple[str, int], Any] = OrderedDict()
        resolved = [resolve_model(spec).with_loaded_members() for spec in specs]
        self._entries: dict[str, _Entry] = {}
        for name, model in zip(_unique([model_name(s) for s in specs]), resolved, strict=True):
            tagger = Tagger(model, **options)
            self._entries[name] = _Entry(name, tagger, len(tagger.members))
        if len(resolved) > 1:
            try:
                tagger = Tagger(combine(resolved), **options)
            except ModelError as err:  # different tag lists: each model still answers by its own name
                logger.warning("serve: no '%s' of the models (%s); pick a model by name", ENSEMBLE, err)
            else:
                self._entries[ENSEMBLE] = _Entry(ENSEMBLE, tagger, len(tagger.members))
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

    def tagger(self, name: str | None, n_chunks: int | None = None) -> Any:
        """The tagger of ``name``; with ``n_chunks`` a shallow copy that shares its models (cached)."""
        entry = self._entries[self.resolve(name)]
        if n_chunks is None or n_chunks == entry.tagger.n_chunks:
            return entry.tagger
        if not 1 <= n_chunks <= 256:
            raise ConfigError(f"chunks must be 1..256, got {n_chunks}")
        key = (entry.name, n_chunks)
        with self._lock:
            variant = self._variants.get(key)
            if variant is None:
                variant = copy.copy(entry.tagger)
                variant.n_chunks = n_chunks
                variant.adaptive = None  # a request that names its chunks gets exactly that many
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
