"""Tagging on a Ray cluster: a pool of model actors that each read, decode and tag their files.

The driver resolves the model once, loads its members and puts them in the object store once (``ray.put``); the
actors (:class:`~focaltag.ray._worker.TagWorker`) get that reference, build their tagger once and never resolve
or read a model file. Each actor holds whole CPUs of one node and runs within them what a local run pinned to
those CPUs runs (torch threads and decoding threads of one budget), so no decoded audio crosses the object store
and no process on a node competes with its actor (:func:`~focaltag.ray.plan_pool`).

* :class:`RayTagger` (``focaltag tag -o TAGS.jsonl --ray``) drives plain Ray actors: it hands each actor a file
  at a time, two calls deep, and yields results in input order; :func:`~focaltag.library.runs.tag_library`
  does the output, resume, ``--refresh``, failures and lock exactly as for a local run. A lost actor's calls go
  to the others (and a replacement starts where the cluster has room); a cluster with no room left for one
  actor ends the run with one line, every line written so far complete.
* :func:`tag_dataset` runs the same actors over a Ray Dataset (``map_batches``) and returns result columns.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from focaltag.errors import ConfigError
from focaltag.ray._cluster import (
    PoolPlan,
    actor_env_options,
    check_actors,
    cluster_nodes,
    connect,
    plan_pool,
    require_ray,
)
from focaltag.ray._pool import ActorPool
from focaltag.ray._worker import Record, TagWorker, new_tagger, tagger_options

if TYPE_CHECKING:
    from focaltag.inference import InferenceOptions, TagFailure, Tagger, TagResult
    from focaltag.models.resolve import ResolvedModel

__all__ = ["RayTagger", "TagActors", "start_tag_actors", "tag_dataset", "MAX_WAITING"]

logger = logging.getLogger(__name__)

MAX_WAITING = 512
"""Results held on the driver for the input order (a long file ahead of them still in an actor): beyond this,
no new files are handed out until it is done, so the driver's memory stays bounded."""


def _resolved_for_actors(tagger: Tagger) -> ResolvedModel:
    """The driver tagger's model with its torch members loaded, for ``ray.put`` (``.onnx`` members stay files,
    which every node must then see at the same path)."""
    return tagger.resolved.with_loaded_members()


def _thresholds(tagger: Tagger) -> dict[str, float] | None:
    """The driver tagger's thresholds as ``{tag: threshold}`` (resolved once, there; None: no decisions)."""
    values = tagger.thresholds
    return None if values is None else dict(zip(tagger.tag_names, map(float, values), strict=True))


class TagActors:
    """Model actors started on the connected cluster before the model is loaded on the driver
    (:func:`start_tag_actors`): their start-up (a process, Python, torch) overlaps the driver's; a
    :class:`RayTagger` given them hands them the model when it runs. :meth:`close` stops those not used."""

    def __init__(self, plan: PoolPlan, pool: ActorPool) -> None:
        self.plan, self.pool = plan, pool
        self.taken = False

    def take(self) -> ActorPool:
        """The pool, once (a later run starts its own)."""
        if self.taken:
            raise RuntimeError("these Ray actors were taken by a run already")
        self.taken = True
        return self.pool

    def close(self) -> None:
        if not self.taken:
            self.taken = True
            self.pool.close()


def _tag_pool(plan: PoolPlan) -> ActorPool:
    """A pool of model actors for ``plan``, started now, the model not yet loaded (:meth:`TagWorker.load`)."""
    import ray

    worker = ray.remote(TagWorker).options(num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus,
                                           scheduling_strategy="SPREAD", max_restarts=0, **actor_env_options())
    return ActorPool(worker, (plan.actor_cpus,), plan.actors, need=plan.need,
                     has_room=lambda: plan.fits_on(cluster_nodes()))


def _log_plan(plan: PoolPlan) -> None:
    logger.info("Ray: %d model actor(s) (%s, %d CPU(s) each%s)", plan.actors, plan.device, plan.actor_cpus,
                ", 1 GPU" if plan.actor_gpus else "")


def start_tag_actors(actors: int | None = None) -> TagActors:
    """Plan and start the model actors on the connected cluster now, before the model is loaded here (the
    ``focaltag tag --ray`` command calls this right after joining, before it imports torch); a cluster without
    room for the plan is one ConfigError line. Pass the result to :class:`RayTagger` (``started=``)."""
    check_actors(actors)
    plan = plan_pool(cluster_nodes(), actors)
    _log_plan(plan)
    return TagActors(plan, _tag_pool(plan))


class RayTagger:
    """A tagger whose :meth:`tag_many` runs on a Ray cluster; what :func:`~focaltag.library.runs.tag_library`
    drives for ``focaltag tag -o TAGS.jsonl --ray``.

    Args:
        models: what :class:`~focaltag.inference.Tagger` takes (used when ``tagger`` is not given).
        tagger_kwargs: the other Tagger arguments (``n_chunks``, ``precision``, ``thresholds`` ...); the device
            and decoding threads are the actors' (:func:`~focaltag.ray.plan_pool`).
        tagger: a Tagger built with the same arguments on the driver; its resolved model is what the actors
            run (put in the object store once), its tag names and thresholds name the results.
        actors: size of the model actor pool (default: as many as the cluster has room for).
        write_tags: :class:`~focaltag.outputs.filetags.FileTagWriter` arguments: tags are written by the actor
            that tagged the file (the path is the same on every node of a shared file system); the outcomes are
            counted in :attr:`tag_writes`.
        started: actors started already (:func:`start_tag_actors`): the first :meth:`tag_many` runs on them
            (``actors`` is then theirs).
    """

    def __init__(self, models: Any, tagger_kwargs: Mapping[str, Any] | None = None, *, tagger: Tagger | None = None,
                 actors: int | None = None, write_tags: Mapping[str, Any] | None = None,
                 started: TagActors | None = None) -> None:
        require_ray()
        self._options = tagger_options(tagger_kwargs or {})
        self.tagger = tagger if tagger is not None else new_tagger(models, self._options)
        self._options["thresholds"] = _thresholds(self.tagger)
        check_actors(actors)  # before anything starts
        self.actors, self.write_tags = actors, write_tags
        self.tag_writes: Counter[str] = Counter()
        self._problems: dict[str, str] = {}
        self.pool: PoolPlan | None = None  # the last run's plan
        self._planned: PoolPlan | None = None  # made by plan() for the next tag_many
        self.actor_stats: list[dict[str, Any]] = []
        self._started = started

    @property
    def tag_names(self) -> tuple[str, ...]:
        return self.tagger.tag_names

    @property
    def thresholds(self) -> Any:
        return self.tagger.thresholds

    @property
    def model_name(self) -> str:
        return self.tagger.model_name

    @property
    def options(self) -> InferenceOptions:
        """The driver tagger's options (what the actors run, but for their device and decoding threads)."""
        return self.tagger.options

    def write_problem(self, result: TagResult) -> str | None:
        """``tag_library``'s ``on_result`` with ``write_tags``: why the worker's tag write failed, else None."""
        return self._problems.pop(result.file, None)

    def plan(self) -> PoolPlan:
        """Size the actor pool from the connected cluster (:func:`~focaltag.ray.plan_pool`); a cluster without
        room for the plan is one ConfigError line. Called before the output is opened, and by :meth:`tag_many`."""
        if self._started is not None and not self._started.taken:
            self.pool = self._planned = self._started.plan
            return self.pool
        self.pool = self._planned = plan_pool(cluster_nodes(), self.actors)
        _log_plan(self.pool)
        return self.pool

    def tag_many(self, inputs: Iterable[str | os.PathLike[str]]) -> Iterator[TagResult | TagFailure]:
        """Tag the paths on the cluster; results come back in input order."""
        import ray
        from focaltag.inference import TagFailure

        plan, self._planned = self._planned or self.plan(), None
        if self._started is not None and not self._started.taken and self._started.plan is plan:
            pool = self._started.take()
        else:
            pool = _tag_pool(plan)
        model_ref = ray.put(_resolved_for_actors(self.tagger))  # once; every actor gets the reference
        pool.setup("load", [model_ref], self._options, plan.device, self.write_tags)
        finished: dict[int, Record] = {}
        next_out = 0

        def give_up(items: list[tuple[str, bytes | None]], reason: str) -> list[Record]:
            return [Record(TagFailure(path, reason, model=self.tagger.model_name)) for path, _ in items]

        try:
            items: Iterator[tuple[str, bytes | None]] = ((os.fspath(p), None) for p in inputs)
            calls = pool.run(items, method="tag",
                             per_call=plan.files_per_call, give_up=give_up,
                             pause=lambda: len(finished) >= MAX_WAITING)
            for first, records in calls:
                finished.update((first + i, r) for i, r in enumerate(records))
                while next_out in finished:
                    yield self._record(finished.pop(next_out))
                    next_out += 1
        finally:
            self.actor_stats = pool.close()
            del model_ref
            for s in self.actor_stats:
                logger.debug("Ray model actor pid %s: %s file(s), %.1f s busy, %.1f CPU-s, %s torch / %s decoding "
                             "thread(s)", s.get("pid"), s.get("files"), s.get("busy_s", 0.0),
                             s.get("process_cpu_s", 0.0), s.get("torch"), s.get("decode"))

    def _record(self, record: Record) -> TagResult | TagFailure:
        from focaltag.inference import TagFailure

        result = record.result
        if record.tag_write:
            self.tag_writes[record.tag_write] += 1
        if record.tag_problem:
            self._problems[result.file] = record.tag_problem
        if isinstance(result, TagFailure):
            logger.warning("failed: %s", result.error)
        return result


# -- Ray Datasets -----------------------------------------------------------------------------------------------
class _DatasetWorker(TagWorker):
    """:class:`TagWorker` as a ``map_batches`` callable: a batch of rows -> result columns (built and loaded in
    one go: Ray Data starts its actors when the model is loaded already)."""

    def __init__(self, model_box: Sequence[Any], options: Mapping[str, Any], cpus: int, device: str = "cpu") -> None:
        super().__init__(cpus)
        self.load(model_box, options, device)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        data = batch.get("bytes")
        items = [(str(p), None if data is None else bytes(data[i])) for i, p in enumerate(batch["path"])]
        return _columns([r.result for r in self.tag(items)], self.loaded_tagger.tag_names)


def _schema(tag_names: Sequence[str]) -> Any:
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("duration", pa.float64()), ("model", pa.string()), ("precision", pa.string()),
        ("probabilities", pa.struct([(t, pa.float64()) for t in tag_names])),
        ("top", pa.list_(pa.struct([("tag", pa.string()), ("probability", pa.float64())]))),
        ("decisions", pa.struct([(t, pa.bool_()) for t in tag_names])),
        ("error", pa.string()),
    ])


def _columns(results: Sequence[TagResult | TagFailure], tag_names: Sequence[str]) -> Any:
    """:func:`tag_dataset`'s result columns (one explicit Arrow schema, so every block agrees)."""
    import pyarrow as pa

    from focaltag.inference import TagFailure

    rows = []
    for r in results:
        if isinstance(r, TagFailure):
            rows.append({"path": r.file, "model": r.model, "error": r.error})
        else:
            rows.append({"path": r.file, "duration": r.duration, "model": r.model, "precision": r.precision,
                         "probabilities": r.probabilities,
                         "top": [{"tag": t, "probability": p} for t, p in r.top], "decisions": r.decisions})
    return pa.Table.from_pylist(rows, schema=_schema(tag_names))


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

    The other arguments are :class:`~focaltag.inference.Tagger`'s; ``actors`` caps the model pool (default:
    as many as the cluster has room for, :func:`~focaltag.ray.plan_pool`); the pool starts with one actor and
    grows as the dataset's own tasks leave CPUs free. The model is resolved and loaded
    here, once, and reaches the actors through the object store. Joins ``RAY_ADDRESS`` or starts a local Ray
    when this process is not connected yet.
    """
    require_ray("focaltag.ray.tag_dataset")
    connect()
    import ray.data

    import ray

    columns = set(ds.columns() or ())
    if "path" not in columns:
        raise ConfigError(f"tag_dataset needs a 'path' column (and optionally 'bytes'); the dataset has "
                          f"{sorted(columns)}; read_binary_files(..., include_paths=True) gives both")
    options = tagger_options({"n_chunks": n_chunks, "hop_seconds": hop_seconds, "batch_size": batch_size,
                              "runtime": runtime, "optimize": optimize, "precision": precision,
                              "thresholds": thresholds, "top_k": top_k, "read": read})
    tagger = new_tagger(model, options)  # validates everything here, once
    options["thresholds"] = _thresholds(tagger)
    plan = plan_pool(cluster_nodes(), actors)
    model_ref = ray.put(_resolved_for_actors(tagger))
    return ds.map_batches(
        _DatasetWorker, fn_constructor_kwargs={"model_box": [model_ref], "options": options,
                                               "cpus": plan.actor_cpus, "device": plan.device},
        # a pool that grows to the plan as CPUs free up: a fixed one would hold every CPU and starve the
        # dataset's own read tasks (read_binary_files), which then never run
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.actors), batch_size=plan.files_per_call,
        batch_format="numpy", num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None,
        **actor_env_options())
