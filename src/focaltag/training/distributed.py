"""torchrun / DDP plumbing: detect the launch from the environment, pick the backend, gather on every rank.

``torchrun --nproc-per-node N -m focaltag train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them the
run is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from focaltag.errors import ConfigError

__all__ = [
    "DistInfo",
    "env_dist_info",
    "init_distributed",
    "cleanup_distributed",
    "resolve_device",
    "barrier",
    "all_gather_objects",
    "all_reduce_mean",
    "broadcast_object",
    "average_buffers",
    "wrap_ddp",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (which sets WORLD_SIZE), even as its only process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process logs, writes metrics and saves checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_dist_info() -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (absent: a single process)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local, launched=bool(os.environ.get("WORLD_SIZE")))


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is available, else CPU; an unavailable device is a ConfigError."""
    from focaltag.devices import resolve_device as _resolve

    return torch.device(_resolve(name, option="runtime.device", local_rank=info.local_rank))


def init_distributed(device: torch.device, info: DistInfo | None = None) -> DistInfo:
    """Join the process group when launched by torchrun: nccl on CUDA, gloo on CPU (env:// rendezvous).

    A torchrun job of one process joins its group too, so ``--nproc-per-node 1`` checks the backend's set-up
    on one GPU before a larger job relies on it; collectives stay no-ops there."""
    info = info or env_dist_info()
    if not (info.enabled or info.launched) or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    if info.is_main:
        log.info("distributed training: %d processes, backend %s", info.world_size, backend)
    return info


def cleanup_distributed(*, wait_for_others: bool = True) -> None:
    """Leave the process group (safe to call when none was joined).

    Ranks that finished cleanly first meet at a barrier: when one rank destroys its gloo group and exits while a
    peer's connections are still open, the peer can abort ("terminate called without an active exception"). A rank
    leaving on an error passes ``wait_for_others=False``: its peers may never reach the barrier, and torchrun stops
    them anyway.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_others and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (a NaN on any rank reaches every rank, so all stop together)."""
    if not _active():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def average_buffers(model: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so every rank validates and
    saves the same model (without SyncBatchNorm each process updates its statistics on its own batches)."""
    if not _active():
        return
    world = dist.get_world_size()
    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(world)


def wrap_ddp(model: torch.nn.Module, device: torch.device, *, sync_batchnorm: bool = True) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when in a process group (SyncBatchNorm on CUDA if asked)."""
    if not _active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif dist.get_rank() == 0 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.info("BatchNorm statistics are per process (SyncBatchNorm needs CUDA)")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
