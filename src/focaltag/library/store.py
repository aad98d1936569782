"""The vector store beside a library run's JSONL: one embedding per tagged track, resumable like the JSONL.

``focaltag tag DIR -o tags.jsonl --embeddings`` keeps the tracks' embeddings in ``tags.jsonl.vectors/``:

* ``store.json``: the header, written once (atomically) when the store is created: the model the vectors came
  from (``embedding_model``), their width (``dim``) and the record layout;
* ``records.bin``: fixed-size records, appended and flushed as each track is done, *before* its JSONL line:
  the track's :func:`~focaltag.library.runs.path_key` (uint64), the vector's L2 norm (float32) and its
  direction as D float16 values. A kill leaves at most a partial last record, which the next run cuts off, as
  it cuts a partial JSONL line.

Why float16 directions: similarity is cosine, so a search needs only the direction, and float16 keeps 11
significant bits, which ``bench/similar_index.py`` measures as recall@10 against float32 (README, "Similar
tracks and playlists"); the norm is kept so :meth:`VectorStore.read_matrix` gives the embedding back.

The JSONL stays the record of *which* tracks are done; the store holds vectors by path key, so the two are
joined by the JSONL's ``"file"``. A record whose key has no JSONL line (a run killed between the two writes)
is ignored by readers and dropped at the next compaction; a JSONL line without a record (a run without
``--embeddings``, or killed between the writes) is tagged again by the next ``--embeddings`` run, which adds
only the vector. Within the store the last record of a key wins, as the last line of a file does.

An index for fast search (:mod:`focaltag.library.index`) lives in ``tags.jsonl.vectors/index/``: derived data,
rebuilt from the store when missing or stale, safe to delete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from focaltag._io import atomic_write, write_json
from focaltag.errors import ConfigError, DataError

__all__ = ["VectorStore", "StoreState", "StoreHeader", "store_dir", "merge_stores", "record_dtype",
           "STORE_FORMAT"]

logger = logging.getLogger(__name__)

STORE_FORMAT = "focaltag-vectors"
STORE_VERSION = 1
HEADER_NAME = "store.json"
RECORDS_NAME = "records.bin"


def store_dir(output: str | os.PathLike[str]) -> Path:
    """``tags.jsonl`` -> ``tags.jsonl.vectors`` (a folder beside the JSONL)."""
    return Path(f"{os.fspath(output)}.vectors")


def record_dtype(dim: int) -> np.dtype:
    """One record: the path key, the vector's norm and its direction in float16 (packed, little-endian)."""
    return np.dtype([("key", "<u8"), ("norm", "<f4"), ("unit", "<f2", (dim,))])


@dataclass(frozen=True)
class StoreHeader:
    """What ``store.json`` says: the model label the vectors came from and their width."""

    embedding_model: str
    dim: int
    chunking: dict[str, Any] | None = None  # the run's n_chunks / adaptive / hop_seconds: seeds are tagged alike

    def __post_init__(self) -> None:
        if not self.embedding_model:
            raise ConfigError("a vector store needs the label of the model its vectors came from")
        if self.dim < 1:
            raise ConfigError(f"a vector store's vectors need at least one value, got dim={self.dim}")

    def to_json(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "embedding_model": self.embedding_model,
                "dim": self.dim, "dtype": "float16", "record": "uint64 path key, float32 norm, dim x float16 "
                "unit vector (little-endian)", "chunking": self.chunking}


@dataclass
class StoreState:
    """The store as read: the record number of each key's last record; ``n_records`` complete records."""

    last: dict[int, int] = field(default_factory=dict)
    n_records: int = 0
    duplicates: int = 0
    repaired_bytes: int = 0

    def recorded(self) -> set[int]:
        return set(self.last)


class VectorStore:
    """The vector store of one JSONL output (``<output>.vectors/``); see the module docstring for the layout.

    Writers hold the output's lock (:func:`focaltag.library.runs.tag_library` takes it); readers never lock and
    ignore a partial last record.
    """

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = Path(output)
        self.folder = store_dir(output)
        self.header_path = self.folder / HEADER_NAME
        self.records_path = self.folder / RECORDS_NAME

    def exists(self) -> bool:
        return self.header_path.is_file()

    def header(self) -> StoreHeader:
        """The header; DataError when it is missing or damaged (the fix: delete the folder and rerun)."""
        try:
            obj = json.loads(self.header_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.output} has no embeddings ({self.header_path} is missing); rerun "
                            f"'focaltag tag ... -o {self.output} --embeddings' to add them") from None
        except ValueError:
            raise DataError(f"{self.header_path} is not JSON; delete {self.folder} and rerun with --embeddings "
                            "to rebuild it") from None
        if not isinstance(obj, dict) or obj.get("format") != STORE_FORMAT or obj.get("version") != STORE_VERSION:
            raise DataError(f"{self.header_path} is not a focaltag vector store of version {STORE_VERSION}; "
                            f"delete {self.folder} and rerun with --embeddings")
        chunking = obj.get("chunking")
        return StoreHeader(str(obj["embedding_model"]), int(obj["dim"]),
                           dict(chunking) if isinstance(chunking, dict) else None)

    def create(self, header: StoreHeader) -> None:
        """Start an empty store (the header first, so a store without it is never read as empty)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.records_path.touch()
        write_json(self.header_path, header.to_json())

    def check_model(self, embedding_model: str, dim: int | None = None) -> StoreHeader:
        """The existing header, or ConfigError when it was written by another model (or another width)."""
        header = self.header()
        if header.embedding_model != embedding_model:
            raise ConfigError(f"{self.output}'s embeddings come from {header.embedding_model}, not "
                              f"{embedding_model}; tag with -m {header.embedding_model}, or write this model's "
                              "run to another -o")
        if dim is not None and header.dim != dim:
            raise DataError(f"{self.folder} holds {header.dim}-value vectors but {embedding_model} gives {dim}; "
                            f"delete {self.folder} and rerun with --embeddings")
        return header

    # -- reading ---------------------------------------------------------------------------------------------
    def read_state(self, *, repair: bool = False) -> StoreState:
        """The last record number of every key; with ``repair`` a partial last record is cut off the file."""
        state = StoreState()
        if not self.exists():
            return state
        dtype = record_dtype(self.header().dim)
        try:
            size = self.records_path.stat().st_size
        except FileNotFoundError:
            return state
        n, partial = divmod(size, dtype.itemsize)
        if partial and repair:
            with open(self.records_path, "rb+") as f:
                f.truncate(n * dtype.itemsize)
            state.repaired_bytes = partial
            logger.warning("%s: removed a partial last record (%d bytes) left by an interrupted run; that track "
                           "is embedded again", self.records_path, partial)
        state.n_records = n
        if n:
            keys = np.fromfile(self.records_path, dtype=dtype, count=n)["key"]
            state.last = {int(k): i for i, k in enumerate(keys.tolist())}
            state.duplicates = n - len(state.last)
        return state

    def records(self) -> np.ndarray:
        """All complete records as a read-only memory map (empty array when there are none)."""
        dtype = record_dtype(self.header().dim)
        n = self.records_path.stat().st_size // dtype.itemsize if self.records_path.exists() else 0
        if n == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(self.records_path, dtype=dtype, mode="r", shape=(n,))

    def read_matrix(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Float32 embeddings (norm times direction) for ``keys`` in their order, and a mask of the keys found
        (rows of keys without a record are zero)."""
        records = self.records()
        rows = self.rows_of(keys, records)
        found = rows >= 0
        out = np.zeros((len(keys), self.header().dim), dtype=np.float32)
        if found.any():
            chosen = records[rows[found]]
            out[found] = chosen["unit"].astype(np.float32) * chosen["norm"][:, None]
        return out, found

    @staticmethod
    def rows_of(keys: Sequence[int], records: np.ndarray) -> np.ndarray:
        """The record number of each key's last record, -1 where there is none."""
        if len(records) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        last = {int(k): i for i, k in enumerate(np.asarray(records["key"]).tolist())}
        return np.fromiter((last.get(int(k), -1) for k in keys), dtype=np.int64, count=len(keys))

    # -- writing ---------------------------------------------------------------------------------------------
    def open_append(self) -> IO[bytes]:
        """The records file opened for appending (the caller holds the output's lock)."""
        return open(self.records_path, "ab")

    def compact(self, keep: Iterable[int] | None = None) -> int:
        """Rewrite the records atomically with one record per key (its last), keeping only the keys in
        ``keep`` when given (the JSONL's files); returns the records dropped."""
        records = self.records()
        if len(records) == 0:
            return 0
        last = {int(k): i for i, k in enumerate(np.asarray(records["key"]).tolist())}
        wanted = set(last) if keep is None else set(last) & set(keep)
        rows = np.fromiter(sorted(last[k] for k in wanted), dtype=np.int64)
        kept = np.array(records[rows])
        dropped = len(records) - len(kept)
        del records  # the memory map closes before the file is replaced (Windows)
        if dropped:
            with atomic_write(self.records_path, "wb") as f:
                f.write(kept.tobytes())
        return dropped


def append_record(out: IO[bytes], key: int, vector: np.ndarray, dim: int) -> None:
    """One record in a single write, flushed (before the JSONL line: see the module docstring)."""
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise DataError(f"an embedding of {vector.shape[0]} values does not fit a store of {dim}-value vectors")
    if not np.isfinite(vector).all():
        raise DataError("the model returned an embedding with NaN or infinite values")
    record = np.zeros(1, dtype=record_dtype(dim))
    norm = float(np.linalg.norm(vector))
    record["key"] = key
    record["norm"] = norm
    record["unit"][0] = vector / norm if norm > 0 else vector
    out.write(record.tobytes())
    out.flush()


def merge_stores(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]],
                 keys: Iterable[int]) -> int:
    """Join the stores of shard outputs into ``output``'s store, keeping the vectors of ``keys`` (the merged
    JSONL's files): the first input that has a key gives its vector. Returns the vectors written (0, and nothing
    written, when no input has a store). Inputs from different models are an error."""
    stores = [VectorStore(p) for p in inputs]
    present = [s for s in stores if s.exists()]
    if not present:
        return 0
    header = present[0].header()
    for s in present[1:]:
        other = s.header()
        if (other.embedding_model, other.dim) != (header.embedding_model, header.dim):
            raise DataError(f"{s.output}'s embeddings come from {other.embedding_model} ({other.dim} values) and "
                            f"{present[0].output}'s from {header.embedding_model} ({header.dim}); merge runs of one "
                            "model")
    missing = [str(s.output) for s in stores if not s.exists()]
    if missing:
        logger.warning("%s: no embeddings; the merged store lacks their tracks (rerun with --embeddings to add "
                       "them)", ", ".join(missing))
    wanted = set(keys)
    chunks: list[np.ndarray] = []
    for s in present:
        records = s.records()
        if len(records) == 0:
            continue
        last = {int(k): i for i, k in enumerate(np.asarray(records["key"]).tolist())}
        take = sorted(i for k, i in last.items() if k in wanted)
        wanted -= {int(k) for k in np.asarray(records["key"][take]).tolist()} if take else set()
        chunks.append(np.array(records[np.asarray(take, dtype=np.int64)]))
    target = VectorStore(output)
    target.folder.mkdir(parents=True, exist_ok=True)
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=record_dtype(header.dim))
    with atomic_write(target.records_path, "wb") as f:
        f.write(data.tobytes())
    write_json(target.header_path, header.to_json())
    return len(data)
