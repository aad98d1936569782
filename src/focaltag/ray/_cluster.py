"""Joining a Ray cluster and sizing the model actor pool from its resources."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from focaltag._extras import require_extra
from focaltag.errors import ConfigError, first_line

__all__ = ["ACTOR_CPUS_MAX", "PoolPlan", "connect", "parse_address", "plan_decoders", "plan_pool", "require_ray"]

logger = logging.getLogger(__name__)


def require_ray(what: str = "--ray") -> None:
    """One line naming ``pip install 'focaltag[ray]'`` when Ray Data is not installed."""
    require_extra("ray", ["ray", "ray.data"], what=what)


CONNECT_TIMEOUT_S = 10.0
"""How long the driver waits for a TCP answer from the cluster's address before it gives up with one line
(Ray's own GCS connect retries for many minutes when nothing listens there)."""


def connect(address: str | None = None, *, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``), or start a local Ray on this machine.

    Returns True when this call connected (the caller then calls ``ray.shutdown()``), False when Ray was
    already initialised in this process (a user's session, a test's cluster), which is left as it is.

    The address is checked first: when nothing answers there within ``timeout`` seconds the call fails with one
    line naming what to check. A cluster on the loopback address (``ray start --head
    --node-ip-address=127.0.0.1``, or ``ray.cluster_utils.Cluster`` on 127.0.0.1) is joined as given: Ray would
    otherwise rewrite ``127.0.0.1`` to this host's network address, where nothing listens (Ray issue #59110),
    so this process then runs in Ray's single-machine mode, as every node of such a cluster does.
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
    elif target not in ("auto", "local"):
        host, port = parse_address(target)
        if _on_loopback_only(host, port, timeout, gcs=not target.startswith("ray://")):
            _single_machine_mode()
            kwargs["_node_ip_address"] = host
    try:
        ray.init(address=target or "local", **kwargs)
    except (ConnectionError, RuntimeError) as err:
        raise ConfigError(f"cannot join the Ray cluster at {target}: {first_line(err)}; check the "
                          "address ('ray status' on the head node prints it) or drop it for a local Ray") from None
    _quiet_ray_data()
    return True


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``, or ``ray://HOST:PORT``) -> (host, port); else one ConfigError line."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray {address}: not a Ray address; give HOST:PORT (the head node's address, which "
                          "'ray status' on it prints), or --ray alone for RAY_ADDRESS or a local Ray")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (``localhost``, ``127.x.y.z``, ``::1``)."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _answers(host: str, port: int, timeout: float, *, gcs: bool = True) -> str | None:
    """None when a Ray head answers at ``host:port`` within ``timeout`` seconds, else why not (a few words).

    First a TCP connection; then, with ``gcs`` and grpcio installed (Ray's own RPC library), one call of the
    GCS's ``GetClusterId``, so that a port where something else listens is told apart too (Ray would retry it for
    half a minute)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return err.strerror or type(err).__name__
    if not gcs or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    try:
        import grpc
    except ImportError:
        return None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=timeout)
        except grpc.RpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return None  # a head that wants a token: ray.init says so
            return f"something answers there, but not a Ray head: {code.name.lower()}"
    return None


def _on_loopback_only(host: str, port: int, timeout: float, *, gcs: bool = True) -> bool:
    """Whether the cluster at ``host:port`` must be joined on the loopback address (see :func:`connect`).

    Raises the one-line ConfigError when no Ray head answers at the address Ray would use either.
    """
    if not is_loopback(host):
        reason = _answers(host, port, timeout, gcs=gcs)
        if reason is not None:
            raise ConfigError(f"cannot reach the Ray cluster at {host}:{port} ({reason}); check that the head node "
                              f"runs ('ray status' on it prints its address) and that port {port} is open from "
                              "this machine, or drop the address for a local Ray")
        return False
    rewritten = _ray_host_address()
    if rewritten is not None and not is_loopback(rewritten) and _answers(rewritten, port, timeout, gcs=gcs) is None:
        return False  # a cluster on the host's own address: Ray's rewrite of the loopback address finds it
    reason = _answers(host, port, timeout, gcs=gcs)
    if reason is not None:
        raise ConfigError(f"cannot reach the Ray cluster at {host}:{port} ({reason}); check that the head node "
                          "runs on this machine ('ray status' prints its address) and the port, or drop the "
                          "address for a local Ray")
    return True


def _ray_host_address() -> str | None:
    """The address Ray puts in place of a loopback one (this host's own address); None when Ray cannot say."""
    try:
        from ray._private.services import node_ip_address_from_perspective

        return str(node_ip_address_from_perspective())
    except Exception:  # a Ray without the function, or no network: then the loopback address is the only one
        return None


def _single_machine_mode() -> None:
    """This process joins a cluster on the loopback address: Ray's single-machine mode, the switch Ray reads
    from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when it is imported (set here on the imported module: Ray is
    imported by then). Ray has no public option for it (its ``_node_ip_address`` is rewritten the same way)."""
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False


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


ACTOR_CPUS_MAX = 4
"""CPUs of one CPU model actor at most: a node with more runs several actors. The paper-size networks take
batches of 4 chunks on a CPU, whose intra-op parallelism stops paying beyond a few threads; several
single-process actors use a big node better than one actor with every core."""


@dataclass(frozen=True)
class PoolPlan:
    """How the model actors use a cluster's resources (see :func:`plan_pool`).

    Every actor reads and decodes its own files within its CPUs (decoding threads beside the torch threads, as
    a local run does), so there are no separate decoding tasks and no decoded audio in the object store.
    """

    actors: int
    actor_cpus: int
    actor_gpus: float
    room: int

    @property
    def device(self) -> str:
        return "cuda" if self.actor_gpus else "cpu"

    @property
    def need(self) -> str:
        """What one actor needs, in words (messages)."""
        return f"{self.actor_cpus} CPU(s)" + (" and a GPU" if self.actor_gpus else "")

    def fits_on(self, nodes: Sequence[Mapping[str, float]]) -> bool:
        """Whether one more actor of this plan fits on one of these nodes (by their resources)."""
        return any(_whole(n.get("CPU")) >= self.actor_cpus and (not self.actor_gpus or _whole(n.get("GPU")) >= 1)
                   for n in nodes)

    @property
    def files_per_call(self) -> int:
        """Files handed to an actor per call: one on a CPU (the call then takes a second or more, and nothing
        waits at the end of a run on one actor's long batch); a GPU actor takes several per call, so that its
        decoding threads each have a file to read."""
        return 1 if not self.actor_gpus else max(1, self.actor_cpus - 1)


def actor_env_options() -> dict[str, Any]:
    """Ray options that start this run's actors with glibc's malloc tunables in their environment at process start,
    (a ``runtime_env``), as the ``focaltag`` command gives a local run (:func:`focaltag._resources.worker_environment`),
    so an actor's large buffers stay in its process instead of being mapped and unmapped per call. Empty when the
    user chose the allocator (the job's own ``runtime_env`` then applies as it is); Ray merges these ``env_vars``
    with a job's own."""
    from focaltag._resources import worker_environment

    env = worker_environment()
    return {"runtime_env": {"env_vars": env}} if env else {}


def _whole(value: float | None) -> int:
    return int(float(value or 0) + 1e-9)


def check_actors(actors: int | None) -> None:
    """``--actors`` is None (as many as fit) or a whole number >= 1; else one ConfigError line."""
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ConfigError(f"--actors must be an integer >= 1, got {actors!r}")


def plan_pool(nodes: Sequence[Mapping[str, float]], actors: int | None = None) -> PoolPlan:
    """The model actor pool for a cluster whose alive nodes have these resources (``ray.nodes()``' ``Resources``).

    Without GPUs every actor reserves ``c`` whole CPUs, ``c`` being the smallest node's CPUs up to
    :data:`ACTOR_CPUS_MAX`, and runs its torch and decoding threads within them; each node hosts as many actors
    as fit (a node of 1 CPU: one actor, one torch thread and one decoding thread). With GPUs: one actor per GPU,
    reserving the CPUs its node has per GPU for decoding. ``actors`` asks for fewer (or exactly as many);
    more than the cluster has room for is refused with one line, before anything runs.
    """
    check_actors(actors)
    gpu_nodes = [n for n in nodes if _whole(n.get("GPU")) >= 1]
    if gpu_nodes:
        per_gpu = min(_whole(n.get("CPU")) // _whole(n.get("GPU")) for n in gpu_nodes)
        if per_gpu < 1:
            raise ConfigError("the Ray cluster's GPU nodes have fewer CPUs than GPUs; each GPU model actor needs "
                              "a CPU of its own node to read files: start the GPU nodes with more --num-cpus")
        room = sum(min(_whole(n.get("GPU")), _whole(n.get("CPU")) // per_gpu) for n in gpu_nodes)
        return PoolPlan(_count(actors, room, per_gpu, "GPU"), actor_cpus=per_gpu, actor_gpus=1.0, room=room)
    cpus = [_whole(n.get("CPU")) for n in nodes if _whole(n.get("CPU")) >= 1]
    if not cpus:
        raise ConfigError("the Ray cluster has no node with a whole CPU; add worker nodes ('ray start "
                          "--address=HEAD:PORT --num-cpus=N' on each) first")
    size = min(min(cpus), ACTOR_CPUS_MAX)
    room = sum(c // size for c in cpus)
    return PoolPlan(_count(actors, room, size, "CPU"), actor_cpus=size, actor_gpus=0.0, room=room)


def plan_decoders(nodes: Sequence[Mapping[str, float]]) -> PoolPlan:
    """The decoding actors of ``data prepare --ray``: one per whole CPU of every node (decoding a track is
    single-threaded: the decoder, then soxr)."""
    room = sum(_whole(n.get("CPU")) for n in nodes)
    if room < 1:
        raise ConfigError("the Ray cluster has no node with a whole CPU; add worker nodes ('ray start "
                          "--address=HEAD:PORT --num-cpus=N' on each) first")
    return PoolPlan(room, actor_cpus=1, actor_gpus=0.0, room=room)


def _count(actors: int | None, room: int, size: int, kind: str) -> int:
    if actors is None:
        return room
    if actors > room:
        what = f"{size} CPU(s)" if kind == "CPU" else "one GPU"
        raise ConfigError(f"--actors {actors}: the Ray cluster has room for {room} model actor(s) of {what} each; "
                          f"add nodes or give --actors {room} or fewer")
    return actors


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of the cluster's alive nodes."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
