"""``focaltag data prepare --ray``: the waveform cache's batch writer, run in Ray actors across a cluster.

:func:`focaltag.audio.cache.prepare_cache` plans the work (tracks of this shard not yet cached, grouped into
commits of about a minute of audio) and collects the results; :func:`ray_batch_runner` only changes where each
batch runs: in one of a pool of Ray actors, one per whole CPU of the cluster, each of which claims a writer slot
of the cache for its life (an ``flock``-ed data file plus its journal, as a local worker process does) and
decodes and commits batch after batch with :func:`focaltag.audio._store.prepare_batch`. The actors start as soon
as the driver has joined the cluster, before it reads the track list and plans the cache. The stored samples of
every track are the bytes a local prepare writes (same decoder, resampler and float16 conversion); a batch lost
with its actor goes to another, and a killed run is resumed by rerunning, as locally: only committed tracks count.

Long-lived actors rather than a task per batch: a task runs in whichever worker process Ray has idle, and on a
small node Ray stops idle workers within a second, so batches kept paying a fresh process's imports, and every
task claimed a slot anew (README, "On a Ray cluster").

The cache folder and the audio must be on a file system every node sees at the same path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from focaltag.ray._cluster import PoolPlan, actor_env_options, cluster_nodes, plan_decoders, require_ray
from focaltag.ray._pool import ActorPool

__all__ = ["ray_batch_runner"]

Job = tuple[str, str, int]


class _PrepareWorker:
    """A decoding actor: started as soon as the driver has joined the cluster (its imports overlap the driver's
    planning), told the cache by :meth:`use_cache`, then one batch per call. It claims one writer slot of the
    cache at its first batch and holds it for its life, so an actor that gets no batch leaves no files."""

    def __init__(self) -> None:
        started = time.perf_counter()
        import focaltag.audio._store  # noqa: F401  (the decoders' imports belong to start-up)

        self.init_seconds = time.perf_counter() - started
        self.cache: tuple[Path, str] | None = None
        self.claimed = False
        self.batches = 0
        self.busy_seconds = 0.0

    def ready(self) -> dict[str, Any]:
        return self.stats()

    def use_cache(self, cache_dir: str, tag: str) -> dict[str, Any]:
        """The cache folder and shard tag this actor's batches go to (a setup call, before its first batch)."""
        self.cache = (Path(cache_dir), tag)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "cpus": 1,
                "init_s": round(self.init_seconds, 3), "batches": self.batches,
                "busy_s": round(self.busy_seconds, 3), "process_cpu_s": round(time.process_time(), 3)}

    def prepare(self, batches: Sequence[list[Job]]) -> list[list[Any]]:
        from focaltag.audio._store import acquire_slot, prepare_batch

        started = time.perf_counter()
        if not self.claimed:
            if self.cache is None:
                raise RuntimeError("_PrepareWorker.prepare before use_cache: the driver names the cache first")
            acquire_slot(*self.cache)
            self.claimed = True
        out = [prepare_batch(list(batch)) for batch in batches]
        self.batches += len(batches)
        self.busy_seconds += time.perf_counter() - started
        return out


def _decoder_pool(plan: PoolPlan, size: int) -> ActorPool:
    """``size`` decoding actors of ``plan``, started now."""
    import ray

    worker = ray.remote(_PrepareWorker).options(num_cpus=plan.actor_cpus, scheduling_strategy="SPREAD",
                                                max_restarts=0, **actor_env_options())
    return ActorPool(worker, (), size, need=plan.need, has_room=lambda: plan.fits_on(cluster_nodes()))


def ray_batch_runner() -> Any:
    """A ``runner`` for :func:`~focaltag.audio.cache.prepare_cache` that decodes the batches in Ray actors.

    One actor per whole CPU of the cluster (:func:`~focaltag.ray.plan_decoders`), each kept two batches deep;
    batches are handed out as actors free up, so the driver's memory and the object store stay small whatever
    the number of tracks; results are yielded as they finish. ``runner.start()``, called once the driver has
    joined the cluster, starts the actors before the cache is planned (their start-up then overlaps the
    driver's), and ``runner.close()`` stops them if the run never came (nothing to decode, an error); without
    ``start()`` they start when the batches come. The actors' stats (process, CPU seconds, batches) are left in
    the runner's ``actor_stats`` list after the run.
    """
    require_ray("data prepare --ray")
    stats: list[dict[str, Any]] = []
    started: list[ActorPool] = []

    def start() -> ActorPool:
        if not started:
            plan = plan_decoders(cluster_nodes())
            started.append(_decoder_pool(plan, plan.actors))
        return started[-1]

    def close() -> None:
        while started:
            started.pop().close()

    def run(cache_dir: Path, tag: str, batches: Sequence[list[Job]]) -> Iterator[list[Any]]:
        if started:
            pool = started.pop()
        else:
            plan: PoolPlan = plan_decoders(cluster_nodes())
            pool = _decoder_pool(plan, min(plan.actors, max(1, len(batches))))
        pool.setup("use_cache", str(cache_dir), tag)

        def give_up(items: list[list[Job]], reason: str) -> list[list[Any]]:
            return [[(tid, path, reason, 0.0, 0.0) for tid, path, _ in batch] for batch in items]

        try:
            for _, results in pool.run(batches, method="prepare", per_call=1, give_up=give_up):
                yield from results
        finally:
            stats[:] = pool.close()

    # function attributes: the eager start and its close, and the stats bench/ray.py reads after the run
    run.start, run.close, run.actor_stats = start, close, stats  # type: ignore[attr-defined]
    return run
