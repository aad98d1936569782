"""Joining a Ray cluster and sizing the model actor pool from its resources."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from focaltag._extras import require_extra
from focaltag.errors import ConfigError, first_line

__all__ = ["PoolPlan", "connect", "plan_pool", "require_ray"]

logger = logging.getLogger(__name__)


def require_ray(what: str = "--ray") -> None:
    """One line naming ``pip install 'focaltag[ray]'`` when Ray Data is not installed."""
    require_extra("ray", ["ray", "ray.data"], what=what)


def connect(address: str | None = None) -> bool:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``), or start a local Ray on this machine.

    Returns True when this call connected (the caller then calls ``ray.shutdown()``), False when Ray was
    already initialised in this process (a user's session, a test's cluster), which is left as it is.
    """
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None  # else a new local Ray, never a stale one
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # the driver's core worker: no C++ warning lines
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if target is None:
        kwargs["include_dashboard"] = False  # a local Ray for this run only
    try:
        ray.init(address=target or "local", **kwargs)
    except ConnectionError as err:
        raise ConfigError(f"cannot join the Ray cluster at {target}: {first_line(err)}; check the "
                          "address ('ray status' on the head node prints it) or drop it for a local Ray") from None
    _quiet_ray_data()
    return True


def _quiet_ray_data() -> None:
    """One progress bar (the driver's): Ray Data's own bars and per-dataset log lines are turned off."""
    import warnings

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours
    # the reads' scheduling_strategy / max_retries go through ray_remote_args, which Ray 2.60 calls deprecated
    warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", module=r"focaltag\.ray")


@dataclass(frozen=True)
class PoolPlan:
    """How the model actors and decoding tasks use a cluster's resources (see :func:`plan_pool`)."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    threads: int
    decode_cpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.actor_gpus else "cpu"


def plan_pool(nodes: Sequence[Mapping[str, float]], actors: int | None = None) -> PoolPlan:
    """The actor pool for a cluster whose alive nodes have these resources (``ray.nodes()``' ``Resources``).

    With GPUs: one actor per GPU (each 1 GPU, 1 CPU); decoding tasks take 1 CPU each. Without: one actor per
    node, each reserving half of the smallest node's CPUs and running that many torch threads, so the other half
    decodes beside it (a model actor on every CPU would leave no CPU for decoding and stall the pipeline). A node
    of one CPU is split in halves: one actor and one decoding task at a time. ``actors`` overrides the count.
    """
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ConfigError(f"--actors must be an integer >= 1, got {actors!r}")
    cpus = [float(n.get("CPU", 0)) for n in nodes if float(n.get("CPU", 0)) > 0]
    if not cpus:
        raise ConfigError("the Ray cluster has no node with a CPU; add workers ('ray start --address=...') first")
    gpus = int(sum(float(n.get("GPU", 0)) for n in nodes))
    least = min(cpus)
    decode_cpus = 1.0 if least >= 2 else least / 2
    if gpus >= 1:
        return PoolPlan(actors or gpus, actor_cpus=decode_cpus, actor_gpus=1.0, threads=1, decode_cpus=decode_cpus)
    share = float(int(least // 2)) if least >= 2 else least / 2
    return PoolPlan(actors or len(cpus), actor_cpus=share, actor_gpus=0.0, threads=max(1, int(share)),
                    decode_cpus=decode_cpus)


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of the cluster's alive nodes."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
