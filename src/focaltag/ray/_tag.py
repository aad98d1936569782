"""Tagging on Ray Data: files read in CPU tasks, the model in an actor pool, results streamed to the driver.

The pipeline of one Dataset (a window of the library, or the user's Dataset for :func:`tag_dataset`)::

    rows {path[, bytes]} --map(_read_row), CPU tasks--> {path, plan, chunks}
                         --map_batches(_TagActor), actor pool--> results

``_read_row`` plans and reads a file's chunks with the functions a local :class:`~focaltag.inference.tagger.Tagger`
uses (:func:`~focaltag.inference.chunking.plan_file`, :func:`~focaltag.inference.chunking.iter_chunks`) and the
actor runs :meth:`Tagger.tag_planned` (the model half of ``tag_many``), so a file's probabilities are a local
run's. The library run keeps everything else on the driver: :class:`RayTagger` is a tagger whose ``tag_many``
yields results in input order, and :func:`~focaltag.library.runs.tag_library` does the output, resume,
``--refresh``, failures and lock exactly as for a local run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.errors import ConfigError, FocaltagError
from focaltag.inference.chunking import ChunkPlan, iter_chunks
from focaltag.inference.reading import DECODER_ERRORS, ReadSettings, decode_failure
from focaltag.inference.tagger import TagFailure, Tagger, TagResult
from focaltag.ray._cluster import PoolPlan, cluster_nodes, connect, plan_pool, require_ray

__all__ = ["RayTagger", "tag_dataset", "WINDOW"]

logger = logging.getLogger(__name__)

WINDOW = 8192
"""Files per Ray Dataset in a library run: the driver walks the library lazily and hands Ray one window at a
time, so its memory does not grow with the catalogue; the actor pool loads the model once per window."""


def _settings(tagger: Tagger) -> ReadSettings:
    """How the decoding tasks plan and read (the model's rate and chunk length), as the tagger would."""
    return ReadSettings(tagger.sample_rate, tagger.chunk_samples, n_chunks=tagger.n_chunks,
                        hop_samples=tagger.hop_samples, method=tagger.read)


def _read_path(path: str, spec: ReadSettings) -> tuple[ChunkPlan, np.ndarray]:
    plan = spec.plan(path)
    chunks = dict(iter_chunks(plan, method=spec.method))
    return plan, np.stack([chunks[i] for i in range(plan.n_chunks)]).astype(np.float32, copy=False)


def _read_bytes(data: bytes, path: str, spec: ReadSettings) -> tuple[ChunkPlan, np.ndarray]:
    """A file given as bytes (object storage): read from a private temporary file named like the original."""
    fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix.lower() or ".audio", prefix="focaltag-ray-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        plan, chunks = _read_path(tmp, spec)
    finally:
        os.unlink(tmp)
    return ChunkPlan(path, plan.sample_rate, plan.n_samples, plan.chunk_samples, plan.starts, plan.native_rate,
                     plan.seekable), chunks


def _read_row(row: dict[str, Any], spec: ReadSettings) -> dict[str, Any]:
    """Decoding task: one file -> its chunk plan and chunks (float32 bytes), or the one-line reason it failed."""
    path = str(row["path"])
    out: dict[str, Any] = {"path": path, "plan": "", "chunks": b"", "error": ""}
    if "index" in row:
        out["index"] = int(row["index"])
    try:
        data = row.get("bytes")
        plan, chunks = _read_path(path, spec) if data is None else _read_bytes(bytes(data), path, spec)
        out["plan"] = json.dumps(asdict(plan))
        out["chunks"] = chunks.tobytes()
    except FocaltagError as err:
        out["error"] = str(err)
    except DECODER_ERRORS as err:
        out["error"] = str(decode_failure(path, err))
    return out


class _TagActor:
    """Model actor: loads the model once, tags each decoded file; ``--write-tags`` writes here, on the worker."""

    def __init__(self, models: Any, tagger_kwargs: dict[str, Any], threads: int, device: str, output: str,
                 writer_kwargs: dict[str, Any] | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.tagger = Tagger(models, device=device, workers=0, **tagger_kwargs)
        self.output = output
        self.writer = None
        if writer_kwargs is not None:
            from focaltag.outputs.filetags import FileTagWriter

            self.writer = FileTagWriter(self.tagger.tag_names, thresholds=self.tagger.thresholds, **writer_kwargs)

    def _tag(self, path: str, plan_json: str, chunks: bytes, error: str) -> TagResult | TagFailure:
        if error:
            return TagFailure(path, error, model=self.tagger.model_name)
        fields = json.loads(plan_json)
        plan = ChunkPlan(**{**fields, "starts": tuple(fields["starts"])})
        array = np.frombuffer(chunks, dtype=np.float32).reshape(plan.n_chunks, plan.chunk_samples)
        result = self.tagger.tag_planned(plan, array)
        if isinstance(result, TagFailure):  # the exception object stays here: it need not pickle
            return TagFailure(result.file, result.error, model=result.model)
        return result

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        results = [self._tag(*row) for row in zip(batch["path"], batch["plan"], batch["chunks"], batch["error"],
                                                   strict=True)]
        if self.output == "columns":
            return _columns(results, self.tagger)
        writes, problems = [], []
        for result in results:
            status, problem = "", ""
            if self.writer is not None and isinstance(result, TagResult):
                outcome = self.writer(result)
                status, problem = outcome.status, (outcome.reason or "") if outcome.status == "failed" else ""
            writes.append(status)
            problems.append(problem)
        return {"index": np.asarray(batch["index"], dtype=np.int64),
                "record": np.array([pickle.dumps(r) for r in results], dtype=object),
                "tag_write": np.array(writes, dtype=object), "tag_problem": np.array(problems, dtype=object)}


def _schema(tag_names: Sequence[str]) -> Any:
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("duration", pa.float64()), ("model", pa.string()), ("precision", pa.string()),
        ("probabilities", pa.struct([(t, pa.float64()) for t in tag_names])),
        ("top", pa.list_(pa.struct([("tag", pa.string()), ("probability", pa.float64())]))),
        ("decisions", pa.struct([(t, pa.bool_()) for t in tag_names])),
        ("error", pa.string()),
    ])


def _columns(results: Sequence[TagResult | TagFailure], tagger: Tagger) -> Any:
    """:func:`tag_dataset`'s result columns (one explicit Arrow schema, so every block agrees)."""
    import pyarrow as pa

    rows = []
    for r in results:
        if isinstance(r, TagFailure):
            rows.append({"path": r.file, "model": r.model, "error": r.error})
        else:
            rows.append({"path": r.file, "duration": r.duration, "model": r.model, "precision": r.precision,
                         "probabilities": r.probabilities,
                         "top": [{"tag": t, "probability": p} for t, p in r.top], "decisions": r.decisions})
    return pa.Table.from_pylist(rows, schema=_schema(tagger.tag_names))


def _pipeline(ds: Any, spec: ReadSettings, pool: PoolPlan, models: Any, tagger_kwargs: dict[str, Any], output: str,
              writer_kwargs: dict[str, Any] | None = None) -> Any:
    """``ds`` (rows with ``path``) through the decoding tasks and the model actor pool."""
    import ray.data

    # Reads are Ray tasks of their own, retried when their node is lost (max_retries, which also keeps Ray Data
    # from fusing them into the model actors), spread over the nodes.
    ds = ds.map(_read_row, fn_kwargs={"spec": spec}, num_cpus=pool.decode_cpus, scheduling_strategy="SPREAD",
                max_retries=3)
    return ds.map_batches(
        _TagActor, fn_constructor_kwargs={"models": models, "tagger_kwargs": tagger_kwargs, "threads": pool.threads,
                                          "device": pool.device, "output": output, "writer_kwargs": writer_kwargs},
        compute=ray.data.ActorPoolStrategy(size=pool.actors), batch_size=1, batch_format="numpy", num_cpus=pool.actor_cpus,
        num_gpus=pool.actor_gpus or None, zero_copy_batch=True)


def _model_list(models: Any) -> Any:
    """Paths as strings (they travel to the actors); models given as objects travel as they are."""
    if isinstance(models, (str, os.PathLike)):
        return os.fspath(models)
    if isinstance(models, Sequence):
        return [os.fspath(m) if isinstance(m, (str, os.PathLike)) else m for m in models]
    return models


class RayTagger:
    """A tagger whose :meth:`tag_many` runs on a Ray cluster; what :func:`~focaltag.library.runs.tag_library`
    drives for ``focaltag tag -o TAGS.jsonl --ray``.

    Args:
        models: what :class:`~focaltag.inference.tagger.Tagger` takes; each actor loads it once.
        tagger_kwargs: the other Tagger arguments (``n_chunks``, ``precision``, ``thresholds`` ...); the device
            is the actor's (a GPU when the cluster has them), decoding happens in Ray tasks.
        tagger: a Tagger built with the same arguments on the driver (its tag names, rate and chunk length plan
            the reads); loaded on the CPU when not given.
        actors: size of the model actor pool (default: :func:`~focaltag.ray.plan_pool`'s).
        write_tags: :class:`~focaltag.outputs.filetags.FileTagWriter` arguments: tags are written by the actor
            that tagged the file (the path is the same on every node of a shared file system); the outcomes are
            counted in :attr:`tag_writes`.
        window: files per Ray Dataset (:data:`WINDOW`).
    """

    def __init__(self, models: Any, tagger_kwargs: dict[str, Any] | None = None, *, tagger: Tagger | None = None,
                 actors: int | None = None, write_tags: dict[str, Any] | None = None, window: int = WINDOW) -> None:
        require_ray()
        self.models = _model_list(models)
        self.tagger_kwargs = {k: v for k, v in (tagger_kwargs or {}).items() if k not in ("device", "workers")}
        self.tagger = tagger if tagger is not None else Tagger(models, workers=0, **self.tagger_kwargs)
        self.tagger_kwargs["thresholds"] = self.tagger.thresholds  # resolved once, on the driver (or None)
        plan_pool([{"CPU": 1}], actors)  # validates ``actors`` before anything starts
        self.actors, self.write_tags, self.window = actors, write_tags, int(window)
        self.tag_writes: Counter[str] = Counter()
        self._problems: dict[str, str] = {}
        self.pool: PoolPlan | None = None

    @property
    def tag_names(self) -> tuple[str, ...]:
        return self.tagger.tag_names

    @property
    def thresholds(self) -> Any:
        return self.tagger.thresholds

    def write_problem(self, result: TagResult) -> str | None:
        """``tag_library``'s ``on_result`` with ``write_tags``: why the worker's tag write failed, else None."""
        return self._problems.pop(result.file, None)

    def tag_many(self, inputs: Iterable[str | os.PathLike[str]]) -> Iterator[TagResult | TagFailure]:
        """Tag the paths on the cluster, a window at a time; results come back in input order."""
        import ray.data

        self.pool = plan_pool(cluster_nodes(), self.actors)
        logger.info("Ray: %d model actor(s) (%s, %s CPU, %d thread(s) each); decoding tasks %s CPU each",
                    self.pool.actors, self.pool.device, self.pool.actor_cpus, self.pool.threads,
                    self.pool.decode_cpus)
        spec = _settings(self.tagger)
        ctx = ray.data.DataContext.get_current()
        keep_order = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True  # results in input order, as tag_library expects
        try:
            source, base = iter(inputs), 0
            while window := [os.fspath(p) for p in islice(source, self.window)]:
                items = [{"index": base + i, "path": p} for i, p in enumerate(window)]
                ds = ray.data.from_items(items, override_num_blocks=min(len(items), 1024))
                ds = _pipeline(ds, spec, self.pool, self.models, self.tagger_kwargs, "record", self.write_tags)
                yield from self._in_order(ds.iter_rows(), window, base)
                base += len(window)
        finally:
            ctx.execution_options.preserve_order = keep_order

    def _in_order(self, rows: Iterator[dict[str, Any]], window: list[str], base: int
                  ) -> Iterator[TagResult | TagFailure]:
        waiting: dict[int, dict[str, Any]] = {}
        next_index = base
        for row in rows:
            waiting[int(row["index"])] = row
            while next_index in waiting:
                yield self._record(waiting.pop(next_index))
                next_index += 1
        for index in range(next_index, base + len(window)):  # never expected: Ray Data retries lost work
            left = waiting.pop(index, None)
            if left is not None:
                yield self._record(left)
            else:
                yield TagFailure(window[index - base], "no result came back from the Ray cluster; a rerun "
                                 "retries it", model=self.tagger.model_name)

    def _record(self, row: dict[str, Any]) -> TagResult | TagFailure:
        result = pickle.loads(row["record"])
        if row["tag_write"]:
            self.tag_writes[row["tag_write"]] += 1
        if row["tag_problem"]:
            self._problems[result.file] = row["tag_problem"]
        if isinstance(result, TagFailure):
            logger.warning("failed: %s", result.error)
        return result


def tag_dataset(ds: Any, model: Any, *, actors: int | None = None, n_chunks: int = 16,
                hop_seconds: float | None = None, batch_size: int | None = None, runtime: str = "torch",
                optimize: str = "none", precision: str = "auto", thresholds: Any = None, top_k: int = 5,
                read: str = "auto") -> Any:
    """Tag every file of a Ray Dataset; returns a Dataset of results (lazy: nothing runs until it is consumed).

    ``ds`` has a ``path`` column (paths every node can read), or ``bytes`` plus ``path`` as
    ``ray.data.read_binary_files(..., include_paths=True)`` gives for object storage. The result has one row per
    file: ``path``, ``duration``, ``model``, ``precision``, ``probabilities`` (tag -> probability), ``top``
    ([{tag, probability}], best first), ``decisions`` (tag -> bool, with ``thresholds``) and ``error`` (the
    one-line reason a file failed, else null). Write it with any Ray writer, e.g. ``.write_parquet(...)``.

    The other arguments are :class:`~focaltag.inference.tagger.Tagger`'s; ``actors`` sizes the model pool
    (default: one per GPU, else one per node; :func:`~focaltag.ray.plan_pool`). Joins ``RAY_ADDRESS`` or starts
    a local Ray when this process is not connected yet.
    """
    require_ray("focaltag.ray.tag_dataset")
    connect()
    columns = set(ds.columns() or ())
    if "path" not in columns:
        raise ConfigError(f"tag_dataset needs a 'path' column (and optionally 'bytes'); the dataset has "
                          f"{sorted(columns)}; read_binary_files(..., include_paths=True) gives both")
    kwargs: dict[str, Any] = {"n_chunks": n_chunks, "hop_seconds": hop_seconds, "batch_size": batch_size,
                              "runtime": runtime, "optimize": optimize, "precision": precision,
                              "thresholds": thresholds, "top_k": top_k, "read": read}
    tagger = Tagger(model, workers=0, **kwargs)  # validates everything here, and plans the reads
    kwargs["thresholds"] = tagger.thresholds
    return _pipeline(ds, _settings(tagger), plan_pool(cluster_nodes(), actors), _model_list(model), kwargs,
                     "columns")
