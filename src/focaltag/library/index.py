"""What a search needs from a library run, derived once from the JSONL and the vector store, and the search.

:class:`LibraryIndex` holds, in one row order (the JSONL's files, each by its last line): the file names, the
durations, every tag's probability, the tags each track "has" (its yes decisions, or its ``top`` tags for a
model without thresholds) and, for tracks with an embedding, the float16 unit vector. Reading a 100,000-track
JSONL takes seconds, so the result is kept in ``<output>.vectors/index/`` with the sizes and modification times
of the JSONL and the store it was built from: derived data, rebuilt when missing or stale, never the only copy
(delete it freely).

:class:`VectorSearch` answers nearest-neighbour queries by cosine. Up to :data:`EXACT_MAX` vectors it
searches exactly (one float32 matrix product per block); above it an HNSW graph (``usearch``, kept in the same
folder) gives candidates, which are re-scored exactly, so every score is the float16 vectors' cosine whichever
path found it. ``bench/similar_index.py`` measures where exact search stops being fast enough and the graph's
recall (README, "Similar tracks and playlists").
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focaltag._io import atomic_write, write_json
from focaltag.errors import DataError
from focaltag.library.store import VectorStore, store_dir

__all__ = ["LibraryIndex", "VectorSearch", "EXACT_MAX", "INDEX_VERSION", "index_dir", "exact_top"]

logger = logging.getLogger(__name__)

INDEX_VERSION = 2

EXACT_MAX = 2_000_000
"""Largest number of vectors searched exactly; above it an HNSW graph is built. Where this lies is measured by
``bench/similar_index.py`` (README, "Similar tracks and playlists"): at a million vectors exact search still
answers well within the interactive budget, while the graph costs minutes to build and misses some of the exact
nearest, so a graph pays only where exact search stops being fast enough."""

HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 1024
"""Candidates the graph search explores: ``bench/similar_index.py``'s sweep on a million clustered vectors found
128 missing a third of the exact 10 nearest and 1024 within the 0.95 recall asked, still in milliseconds."""


def index_dir(output: str | os.PathLike[str]) -> Path:
    """``tags.jsonl`` -> ``tags.jsonl.vectors/index``."""
    return store_dir(output) / "index"


def _stamp(path: Path) -> list[int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def exact_top(unit: np.ndarray, query: np.ndarray, k: int, *, rows: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``unit`` (float16 or float32 unit vectors) nearest to ``query`` by cosine, best first,
    searched exactly; ``rows`` restricts the search to those rows.

    usearch's brute-force kernels read the float16 vectors as they are stored (converting a whole float16
    matrix to float32 per query would cost more than the search); the candidates are then re-scored in float32,
    so scores and ties (by row) do not depend on the kernel."""
    from usearch.index import search

    query = np.asarray(query, dtype=np.float32)
    n = len(unit) if rows is None else len(rows)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    data = np.ascontiguousarray(unit if rows is None else unit[rows])
    wanted = min(n, 2 * k + 16)  # room for the kernel's rounding to reorder near-ties at the cut
    if wanted == n:
        candidates = np.arange(n, dtype=np.int64)
    else:
        matches = search(data, query.astype(data.dtype), wanted, metric="cos", exact=True)
        candidates = np.asarray(matches.keys, dtype=np.int64)
    scores = np.asarray(data[candidates], dtype=np.float32) @ query
    order = np.lexsort((candidates, -scores))[:k]
    found = candidates[order]
    return (found if rows is None else np.asarray(rows, dtype=np.int64)[found]), scores[order]


class VectorSearch:
    """Cosine search over unit vectors: exact up to :data:`EXACT_MAX`, else HNSW candidates re-scored exactly."""

    def __init__(self, unit: np.ndarray, graph: Any = None) -> None:
        self.unit, self.graph = unit, graph

    def __len__(self) -> int:
        return len(self.unit)

    def scores(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.unit[rows], dtype=np.float32) @ np.asarray(query, dtype=np.float32)

    def ranked(self, query: np.ndarray, *, rows: np.ndarray | None = None, first: int = 64
               ) -> Iterator[tuple[int, float]]:
        """Rows by decreasing cosine to ``query``, lazily (``rows``: only those); the caller stops when it has
        enough, so filters that drop candidates only cost more candidates."""
        n = len(self.unit) if rows is None else len(rows)
        k = min(first, n)
        yielded: set[int] = set()
        while k > 0:
            found, scores = self._top(query, k, rows)
            for row, score in zip(found.tolist(), scores.tolist(), strict=True):
                if row not in yielded:  # a larger graph search may reorder what an earlier one found
                    yielded.add(row)
                    yield row, score
            if k >= n:
                return
            k = min(k * 4, n)

    def _top(self, query: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.graph is None or rows is not None or k * 8 >= len(self.unit):
            return exact_top(self.unit, query, k, rows=rows)
        matches = self.graph.search(np.asarray(query, dtype=np.float32), k)
        found = np.asarray(matches.keys, dtype=np.int64)
        scores = self.scores(query, found)
        order = np.lexsort((found, -scores))
        return found[order], scores[order]


class FileNames(Sequence[str]):
    """The library's file names by row: a list when just built, else read on demand from the saved index, so a
    query on a 100,000-track library reads the names it returns, not all of them.

    Saved as ``files.txt`` (one JSON string per line), ``file_offsets.npy`` (where each line starts) and
    ``file_keys.npy`` / ``key_order.npy`` (the rows' :func:`~focaltag.library.runs.path_key` and their sorted
    order, which finds a name's row without reading the names)."""

    def __init__(self, names: list[str] | None = None, *, folder: Path | None = None) -> None:
        self._names = names
        self._folder = folder
        if names is None:
            assert folder is not None
            self._offsets = np.load(folder / "file_offsets.npy", mmap_mode="r")
            self._keys = np.load(folder / "file_keys.npy", mmap_mode="r")
            self._order = np.load(folder / "key_order.npy", mmap_mode="r")
            self._text = np.memmap(folder / "files.txt", dtype=np.uint8, mode="r") \
                if int(self._offsets[-1]) else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._names) if self._names is not None else len(self._offsets) - 1

    def _name(self, row: int) -> str:
        if self._names is not None:
            return self._names[row]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        raw = bytes(self._text[int(self._offsets[row]):int(self._offsets[row + 1])])
        return str(json.loads(raw))

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self._name(i) for i in range(*row.indices(len(self)))]
        return self._name(int(row))

    def __iter__(self) -> Iterator[str]:
        if self._names is not None:
            return iter(self._names)
        assert self._folder is not None
        with open(self._folder / "files.txt", encoding="utf-8") as f:
            return iter([str(json.loads(line)) for line in f])

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """The row of a file name as the JSONL writes it (ValueError when it is not a library track)."""
        if self._names is not None:
            return self._names.index(value, start, len(self) if stop is None else stop)
        from focaltag.library.runs import path_key

        key = np.uint64(path_key(str(value)))
        keys = self._keys[self._order]
        at = int(np.searchsorted(keys, key))
        while at < len(keys) and keys[at] == key:
            row = int(self._order[at])
            if self._name(row) == value:
                return row
            at += 1
        raise ValueError(f"{value!r} is not a track of the library")

    def save(self, folder: Path) -> None:
        from focaltag.library.runs import path_key

        names = list(self)
        lines = [json.dumps(n, ensure_ascii=True).encode("ascii") + b"\n" for n in names]
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(line) for line in lines], dtype=np.int64)  # a line: its name + "\n"
        keys = np.fromiter((path_key(n) for n in names), dtype=np.uint64, count=len(names))
        with atomic_write(folder / "files.txt", "wb") as f:
            f.writelines(lines)
        for name, array in (("file_offsets", offsets), ("file_keys", keys),
                            ("key_order", np.argsort(keys, kind="stable"))):
            with atomic_write(folder / f"{name}.npy", "wb") as f:
                np.save(f, array)


@dataclass
class LibraryIndex:
    """One library run, ready to search (see the module docstring). Rows are tracks in JSONL order."""

    files: FileNames
    durations: np.ndarray  # (n,) float32 seconds
    tag_names: list[str]
    probabilities: np.ndarray  # (n, n_tags) float16
    labels: np.ndarray  # (n, n_tags) bool: the tags a track has (decisions, else its top tags)
    has_decisions: bool
    models: list[str]  # the JSONL's "model" labels, most frequent first
    vector_row: np.ndarray  # (n,) int64: the row of unit, -1 for a track without an embedding
    unit: np.ndarray  # (m, D) float16 unit vectors
    embedding_model: str | None
    graph: Any = None

    @property
    def n_without_vector(self) -> int:
        return int((self.vector_row < 0).sum())

    def search(self) -> VectorSearch:
        return VectorSearch(self.unit, self.graph)

    @classmethod
    def load(cls, output: str | os.PathLike[str], *, save: bool = True) -> LibraryIndex:
        """The index of ``output``: read from ``<output>.vectors/index/`` when it is current, else built from
        the JSONL and the store (and saved there when ``save`` and the folder is writable)."""
        output = Path(output)
        if not output.is_file():
            raise DataError(f"no such library: {output}; tag a folder first with 'focaltag tag DIR -o {output} "
                            "--embeddings'")
        store = VectorStore(output)
        stamp = {"jsonl": _stamp(output), "records": _stamp(store.records_path), "version": INDEX_VERSION}
        folder = index_dir(output)
        if store.exists():
            cached = _read_saved(folder, stamp)
            if cached is not None:
                return cached
        index = _build(output, store, previous=folder if store.exists() else None)
        if save and store.exists():
            try:
                _save(index, folder, stamp)
            except OSError as err:
                logger.warning("%s: cannot keep the search index there (%s); it is rebuilt on each use", folder,
                               err.strerror or err)
        return index


# -- building ----------------------------------------------------------------------------------------------
def _track_lines(output: Path) -> Iterator[dict[str, Any]]:
    """The JSONL's lines, the last one of each file, in file order (a partial last line is ignored)."""
    from focaltag.library.runs import _parse_line, path_key, read_output

    state = read_output(output, repair=False)
    with open(output, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n") or not line.strip():
                continue
            obj = _parse_line(line, f"{output} line {number}")
            if state.lines.get(path_key(obj["file"])) == number:
                yield obj


def _labels_of(obj: dict[str, Any]) -> list[str]:
    decisions = obj.get("decisions")
    if isinstance(decisions, dict):
        return [t for t, yes in decisions.items() if yes]
    return [t["tag"] for t in obj.get("top", []) if isinstance(t, dict) and "tag" in t]


def _build(output: Path, store: VectorStore, previous: Path | None = None) -> LibraryIndex:
    from focaltag.library.runs import path_key

    files: list[str] = []
    durations: list[float] = []
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    tag_names: list[str] | None = None
    tag_pos: dict[str, int] = {}
    models: dict[str, int] = {}
    has_decisions = False
    for obj in _track_lines(output):
        tags = obj.get("tags")
        if not isinstance(tags, dict):
            continue  # a failure line of an older format: not a track
        if tag_names is None:
            tag_names = list(tags)
            tag_pos = {t: i for i, t in enumerate(tag_names)}
        row = np.zeros(len(tag_names), dtype=np.float32)
        for t, p in tags.items():
            if t in tag_pos:
                row[tag_pos[t]] = p
        has = np.zeros(len(tag_names), dtype=bool)
        for t in _labels_of(obj):
            if t in tag_pos:
                has[tag_pos[t]] = True
        has_decisions = has_decisions or isinstance(obj.get("decisions"), dict)
        files.append(obj["file"])
        durations.append(float(obj.get("duration") or 0.0))
        probs.append(row)
        labels.append(has)
        model = str(obj.get("model", ""))
        models[model] = models.get(model, 0) + 1
    n_tags = len(tag_names or [])
    embedding_model = None
    vector_row = np.full(len(files), -1, dtype=np.int64)
    unit = np.zeros((0, 1), dtype=np.float16)
    if store.exists():
        header = store.header()
        embedding_model = header.embedding_model
        records = store.records()
        rows = VectorStore.rows_of([path_key(f) for f in files], records)
        found = np.flatnonzero(rows >= 0)
        unit = np.array(records["unit"][rows[found]], dtype=np.float16).reshape(len(found), header.dim)
        vector_row[found] = np.arange(len(found))
    return LibraryIndex(
        files=FileNames(files), durations=np.asarray(durations, dtype=np.float32), tag_names=tag_names or [],
        probabilities=np.asarray(probs, dtype=np.float16).reshape(len(files), n_tags),
        labels=np.asarray(labels, dtype=bool).reshape(len(files), n_tags), has_decisions=has_decisions,
        models=sorted(models, key=lambda m: -models[m]), vector_row=vector_row, unit=unit,
        embedding_model=embedding_model, graph=_grown_graph(previous, unit) if len(unit) > EXACT_MAX else None)


def _graph(unit: np.ndarray) -> Any:
    """An HNSW graph over the unit vectors (keys: their row numbers)."""
    from usearch.index import Index

    graph = Index(ndim=unit.shape[1], metric="cos", dtype="f16", connectivity=HNSW_CONNECTIVITY,
                  expansion_add=HNSW_EXPANSION_ADD, expansion_search=HNSW_EXPANSION_SEARCH)
    logger.info("building the search graph of %d tracks (once; kept beside the store)", len(unit))
    graph.add(np.arange(len(unit), dtype=np.uint64), np.asarray(unit, dtype=np.float16))
    return graph


def _expansions(graph: Any) -> None:
    """Set the index's expansions on a graph read back from disk: usearch restores a saved graph with its own
    defaults, not the expansions the graph was built with (tracks added to it would be linked more loosely too)."""
    graph.expansion_add = HNSW_EXPANSION_ADD
    graph.expansion_search = HNSW_EXPANSION_SEARCH


def _grown_graph(previous: Path | None, unit: np.ndarray) -> Any:
    """The saved graph with the new tracks added, when the library only grew (a resumed or continued run
    appends: the saved vectors are the first rows of the new ones); else a graph built anew."""
    try:
        if previous is None or not json.loads((previous / "meta.json").read_text(encoding="utf-8")).get("graph"):
            return _graph(unit)
        old = np.load(previous / "unit.npy", mmap_mode="r")
        if not (len(old) <= len(unit) and np.array_equal(old, unit[:len(old)])):
            return _graph(unit)
        from usearch.index import Index

        graph = Index.restore(os.fspath(previous / GRAPH_NAME))
    except (OSError, ValueError, KeyError):
        return _graph(unit)
    if graph is None or len(graph) != len(old):
        return _graph(unit)
    _expansions(graph)
    logger.info("adding %d track(s) to the search graph of %d", len(unit) - len(old), len(old))
    if len(unit) > len(old):
        graph.add(np.arange(len(old), len(unit), dtype=np.uint64), np.asarray(unit[len(old):], dtype=np.float16))
    return graph


# -- saving and reading back -------------------------------------------------------------------------------
_ARRAYS = ("durations", "probabilities", "labels", "vector_row", "unit")
GRAPH_NAME = "hnsw.usearch"


def _save(index: LibraryIndex, folder: Path, stamp: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # stale from here until the new one is written
    for name in _ARRAYS:
        with atomic_write(folder / f"{name}.npy", "wb") as f:
            np.save(f, getattr(index, name))
    index.files.save(folder)
    graph_path = folder / GRAPH_NAME
    if index.graph is not None:
        tmp = folder / f".{GRAPH_NAME}.tmp-{os.getpid()}"
        index.graph.save(os.fspath(tmp))
        os.replace(tmp, graph_path)
    else:
        graph_path.unlink(missing_ok=True)
    write_json(folder / "meta.json", {**stamp, "tag_names": index.tag_names, "has_decisions": index.has_decisions,
                                      "models": index.models, "embedding_model": index.embedding_model,
                                      "graph": index.graph is not None})


def _read_saved(folder: Path, stamp: dict[str, Any]) -> LibraryIndex | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if any(meta.get(k) != v for k, v in stamp.items()):
            return None
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        files = FileNames(folder=folder)
        graph = None
        # a graph saved under a lower EXACT_MAX is left unused: that many vectors are now searched exactly
        if meta.get("graph") and len(arrays["unit"]) > EXACT_MAX:
            from usearch.index import Index

            graph = Index.restore(os.fspath(folder / GRAPH_NAME), view=True)
            if graph is not None:
                _expansions(graph)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as err:
        logger.info("%s: rebuilding the search index (%s)", folder, err)
        return None
    return LibraryIndex(files=files, tag_names=list(meta["tag_names"]), has_decisions=bool(meta["has_decisions"]),
                        models=list(meta["models"]), embedding_model=meta["embedding_model"], graph=graph,
                        **arrays)
