"""``focaltag data prepare --ray``: the waveform cache's batch writer, run in Ray tasks across a cluster.

:func:`focaltag.audio.cache.prepare_cache` plans the work (tracks of this shard not yet cached, grouped into
commits of about a minute of audio) and collects the results; :func:`ray_batch_runner` only changes where each
batch runs: in a Ray task that claims a writer slot of the cache (an ``flock``-ed data file plus its journal,
as a local worker process does), decodes and commits the batch with
:func:`focaltag.audio._store.prepare_batch`, and releases the slot. The stored samples of every track are the
bytes a local prepare writes (same decoder, resampler and float16 conversion); a task lost with its node is
retried by Ray, and a killed run is resumed by rerunning, as locally: only committed tracks count.

The cache folder and the audio must be on a file system every node sees at the same path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from focaltag.ray._cluster import cluster_nodes, plan_pool, require_ray

__all__ = ["ray_batch_runner"]


def _prepare_in_task(cache_dir: str, tag: str, batch: list[tuple[str, str, int]]) -> list[Any]:
    from focaltag.audio._store import acquire_slot, prepare_batch, release_slot

    acquire_slot(Path(cache_dir), tag)
    try:
        return prepare_batch(batch)
    finally:
        release_slot()


def ray_batch_runner(max_in_flight: int | None = None) -> Any:
    """A ``runner`` for :func:`~focaltag.audio.cache.prepare_cache` that decodes the batches in Ray tasks.

    At most ``max_in_flight`` batches are submitted at a time (default: two per decoding slot of the cluster),
    so the driver's memory and the object store stay small whatever the number of tracks; results are
    collected as they finish.
    """
    require_ray("data prepare --ray")

    def run(cache_dir: Path, tag: str, batches: Sequence[list[tuple[str, str, int]]]) -> Iterator[list[Any]]:
        import ray

        nodes = cluster_nodes()
        pool = plan_pool(nodes)
        slots = max(1, int(sum(n.get("CPU", 0) for n in nodes) / pool.decode_cpus))
        limit = max_in_flight or 2 * slots
        task = ray.remote(num_cpus=pool.decode_cpus, max_retries=3)(_prepare_in_task)
        pending: list[Any] = []
        todo = iter(batches)
        while True:
            while len(pending) < limit and (batch := next(todo, None)) is not None:
                pending.append(task.remote(str(cache_dir), tag, batch))
            if not pending:
                return
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)

    return run
