"""``focaltag.Library``: similar tracks, playlists and the embeddings of a library run, from Python.

Example::

    >>> from focaltag import Library
    >>> lib = Library("tags.jsonl")                      # written by: focaltag tag ~/Music -o tags.jsonl --embeddings
    >>> lib.similar("Music/a.mp3", n=10, where=["calm"])  # [Match(file, score), ...] best first
    >>> lib.playlist(like="Music/a.mp3", n=25)           # [Entry(file, duration, score), ...]
    >>> files, matrix = lib.embeddings()                  # the JSONL's "file" values and an (n, D) float32 matrix

The command line (``focaltag similar``, ``focaltag playlist``) and ``focaltag serve --library`` are thin layers
over this class.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.errors import ConfigError, DataError
from focaltag.library.index import LibraryIndex
from focaltag.library.m3u import write_m3u
from focaltag.library.playlist import Entry, mood_playlist, path_playlist, radio_playlist
from focaltag.library.search import Match, Seed, SpreadBy, similar_tracks, unit_vector
from focaltag.library.store import VectorStore

__all__ = ["Library"]

SeedLike = str | os.PathLike[str]


class Library:
    """One library run (a ``focaltag tag ... -o tags.jsonl --embeddings`` output), ready to search.

    Args:
        path (str or PathLike): the JSONL; its vector store is ``<path>.vectors/``.
        model (str, optional): the model the caller expects the embeddings to come from; a library from another
            model is a ConfigError. It is also the model that tags seeds from outside the library (default: the
            library's own, ``embedding_model``).
        device (str, optional): torch device for tagging such seeds. (Default: ``"cpu"``)
    """

    def __init__(self, path: str | os.PathLike[str], *, model: str | os.PathLike[str] | None = None,
                 device: str = "cpu") -> None:
        self.path = Path(path)
        self.model, self.device = model, device
        self._tagger: Any = None
        if not self.path.is_file():
            raise DataError(f"no such library: {self.path}; tag a folder first with 'focaltag tag DIR -o "
                            f"{self.path} --embeddings'")

    @cached_property
    def index(self) -> LibraryIndex:
        """The search index (built from the JSONL and the store on first use, then kept beside the store)."""
        index = LibraryIndex.load(self.path)
        if self.model is not None and index.embedding_model is not None:
            named = _label_of(self.model)
            if named != index.embedding_model:
                raise ConfigError(f"{self.path}'s embeddings come from {index.embedding_model}, not {named}; "
                                  f"name -m {index.embedding_model} (or leave -m out)")
        return index

    @property
    def embedding_model(self) -> str | None:
        """The label of the model the library's vectors came from (None without embeddings)."""
        store = VectorStore(self.path)
        return store.header().embedding_model if store.exists() else None

    def __len__(self) -> int:
        return len(self.index.files)

    # -- the public operations ---------------------------------------------------------------------------
    def embeddings(self) -> tuple[list[str], np.ndarray]:
        """The tracks that have an embedding, as in the JSONL's ``"file"``, and their float32 embeddings (one
        row each, the same order; the vectors as the model gave them, to float16 precision)."""
        self._require_vectors()
        index = self.index
        rows = np.flatnonzero(index.vector_row >= 0)
        files = [index.files[r] for r in rows.tolist()]
        from focaltag.library.runs import path_key

        matrix, _found = VectorStore(self.path).read_matrix([path_key(f) for f in files])
        return files, matrix

    def similar(self, *seeds: SeedLike, n: int = 25, where: Sequence[str] = (), spread: int | None = None,
                spread_by: SpreadBy = "artist") -> list[Match]:
        """The ``n`` tracks most similar to the seeds (their mean), best first; see
        :func:`focaltag.library.search.similar_tracks` for the rules (seeds and their duplicates excluded,
        ``where`` tags, ``spread`` per artist or album). A seed outside the library is tagged with the
        library's model."""
        self._require_vectors()
        return similar_tracks(self.index, [self.seed(s) for s in seeds], n, where=where, spread=spread,
                              spread_by=spread_by, info=self.file_info)

    def playlist(self, *, tags: Sequence[str] = (), like: SeedLike | None = None,
                 glide: tuple[SeedLike, SeedLike] | None = None, n: int = 25, spread: int | None = None,
                 spread_by: SpreadBy = "artist") -> list[Entry]:
        """A playlist in one of three modes (give exactly one): ``tags`` (mood), ``like`` (radio from a seed)
        or ``glide=(A, B)`` (a path from A to B); see :mod:`focaltag.library.playlist`."""
        modes = [name for name, given in (("tags", bool(tags)), ("like", like is not None),
                                          ("glide", glide is not None)) if given]
        if len(modes) != 1:
            raise ConfigError("a playlist needs exactly one of --tag (mood), --like (radio) or --from/--to (path)"
                              + (f"; got {' and '.join(modes)}" if modes else ""))
        if tags:
            return mood_playlist(self.index, tags, n)
        self._require_vectors()
        if like is not None:
            return radio_playlist(self.index, self.seed(like), n, spread=spread, spread_by=spread_by,
                                  info=self.file_info)
        assert glide is not None
        return path_playlist(self.index, self.seed(glide[0]), self.seed(glide[1]), n)

    def write_playlist(self, entries: Sequence[Entry], path: str | os.PathLike[str], *,
                       absolute: bool = False) -> Path:
        """Write ``entries`` as an ``.m3u8`` (see :mod:`focaltag.library.m3u`); library paths are located as
        :meth:`locate` says."""
        located = [Entry(self.locate(e.file), e.duration, e.score) for e in entries]
        return write_m3u(located, path, absolute=absolute, info=self.file_info)

    # -- seeds -------------------------------------------------------------------------------------------
    def seed(self, seed: SeedLike) -> Seed:
        """A seed's vector: its stored one when it is a library track, else it is tagged with the model."""
        row = self.find(seed)
        index = self.index
        if row is not None:
            vrow = int(index.vector_row[row])
            if vrow < 0:
                raise DataError(f"{seed} is in {self.path} without an embedding; rerun 'focaltag tag ... -o "
                                f"{self.path} --embeddings' to add the missing ones")
            return Seed(index.files[row], unit_vector(np.asarray(index.unit[vrow], dtype=np.float32)),
                        float(index.durations[row]), row)
        return self._tag_seed(os.fspath(seed))

    def find(self, seed: SeedLike) -> int | None:
        """The library row of ``seed``: the same string as the JSONL's ``"file"``, the same absolute path, or
        the same file (another spelling of its path); None when it is not a library track."""
        text = os.fspath(seed)
        files = self.index.files
        with contextlib.suppress(ValueError):
            return files.index(text)  # one scan: cheaper than a dict of 100,000 paths for a single lookup
        if not os.path.exists(text):
            return None
        absolute = os.path.abspath(text)
        name = os.path.basename(text)
        for row, file in enumerate(files):
            if os.path.basename(file) != name:
                continue
            candidate = self.locate(file)
            if os.path.abspath(candidate) == absolute or _same_file(candidate, text):
                return row
        return None

    def locate(self, file: str) -> str:
        """Where a JSONL ``"file"`` is now: as written when absolute or found from here, else relative to the
        JSONL's folder (a run started in that folder), else as written."""
        if os.path.isabs(file) or os.path.exists(file):
            return file
        beside = os.path.join(os.path.dirname(os.path.abspath(self.path)), file)
        return beside if os.path.exists(beside) else file

    def file_info(self, file: str) -> Any:
        from focaltag.library.search import file_info

        return file_info(self.locate(file))

    def _tag_seed(self, path: str) -> Seed:
        if not os.path.exists(path):
            raise ConfigError(f"seed {path}: no such file, and not a track of {self.path}")
        import logging

        from focaltag.errors import AudioDecodeError
        from focaltag.inference.tagger import TagFailure

        tagger_log = logging.getLogger("focaltag.inference.tagger")
        level = tagger_log.level
        tagger_log.setLevel(logging.ERROR)  # a seed that fails is reported once, by the error below
        try:
            result = next(iter(self.tagger.tag_many([path])))
        finally:
            tagger_log.setLevel(level)
        if isinstance(result, TagFailure):
            raise AudioDecodeError(f"seed {result.error}" if path in result.error else f"seed {path}: {result.error}")
        vector = getattr(result, "embedding", None)
        if vector is None:
            raise DataError(f"seed {path}: the model gave no embedding")
        return Seed(path, unit_vector(vector), float(result.duration), None)

    @property
    def tagger(self) -> Any:
        """The tagger for seeds outside the library: the named model, else the library's, with embeddings."""
        if self._tagger is None:
            spec = self.model if self.model is not None else self.index.embedding_model
            if spec is None:
                self._require_vectors()
            from focaltag.inference import InferenceOptions, Tagger

            store = VectorStore(self.path)
            chunking = (store.header().chunking if store.exists() else None) or {}
            try:
                self._tagger = Tagger(spec, InferenceOptions(embeddings=True, device=self.device, **chunking))
            except FileNotFoundError:
                raise ConfigError(f"{self.path}'s embeddings come from {spec}, which is not a catalogue name; name "
                                  "its file with -m PATH to tag seeds from outside the library") from None
        return self._tagger

    def _require_vectors(self) -> None:
        if not VectorStore(self.path).exists():
            raise DataError(f"{self.path} has no embeddings; rerun 'focaltag tag ... -o {self.path} --embeddings' "
                            "(tracks already tagged only get their vectors)")
        missing = self.index.n_without_vector
        if missing and not getattr(self, "_warned", False):
            import logging

            logging.getLogger(__name__).warning(
                "%s: %d track(s) have no embedding and are left out; rerun 'focaltag tag ... -o %s --embeddings' "
                "to add them", self.path, missing, self.path)
            self._warned = True


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _label_of(model: str | os.PathLike[str]) -> str:
    """The label results report for a model spec: the catalogue name, else the file or folder name (the rule of
    :func:`focaltag.models.resolve.resolve_model`; nothing is fetched or loaded)."""
    return Path(os.fspath(model)).name
