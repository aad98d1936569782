"""What runs inside a Ray model actor: a process set up for its CPUs, then the tagger, built once from the model the
driver put in the object store.

An actor starts as soon as the driver has joined the cluster, before the driver has loaded the model: its
constructor sets the process up (torch's intra-op threads and the decoding threads of one budget,
``focaltag.inference.configure_runtime``, one inter-op thread, torch imported), and :meth:`TagWorker.load`
later builds the tagger from the model's object-store reference. The actor's start-up (a process, Python,
torch) so overlaps the driver's own. Each call then runs :meth:`Tagger.tag_many` over its files, which reads,
decodes and tags them within the actor's CPUs. No decoded audio crosses the object store; only the model does,
once (``ray.put`` on the driver), and the actor never resolves or reads a model file itself.

This module imports neither torch nor the tagger at import time: the driver imports it to start the actors
before it imports torch itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from focaltag.inference import TagFailure, Tagger, TagResult
    from focaltag.models.resolve import ResolvedModel

__all__ = ["ActorThreads", "Record", "TagWorker", "configure_threads", "new_tagger", "tagger_options"]

_NOT_OPTIONS = ("device", "workers", "prefetch")
"""Tagger arguments a Ray run decides per actor (where it runs, how many decoding threads), not the user."""


def tagger_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The tagging options a Ray run passes to every actor: the user's Tagger arguments without those decided
    per actor (:data:`_NOT_OPTIONS`). The one place that shapes them (see :func:`new_tagger`)."""
    return {k: v for k, v in kwargs.items() if k not in _NOT_OPTIONS}


def new_tagger(model: ResolvedModel | Any, options: Mapping[str, Any], *, device: str = "cpu",
               workers: int = 0) -> Tagger:
    """The one place a Ray run builds a :class:`Tagger`: on the driver (``workers=0``, to plan and name things)
    and in every actor (its device and decoding threads)."""
    from focaltag.inference import InferenceOptions, Tagger

    return Tagger(model, InferenceOptions(**options, device=device, workers=workers))


@dataclass(frozen=True)
class ActorThreads:
    """The threads an actor runs within its CPUs."""

    cpus: int
    decode: int
    torch: int
    interop: int


def configure_threads(cpus: int) -> ActorThreads:
    """Set this process up for ``cpus`` CPUs (:func:`~focaltag.inference.configure_runtime`): torch's intra-op
    threads and the decoding threads share one budget, as in a local run on that many cores; one inter-op thread
    (the networks run no parallel ops)."""
    import torch

    from focaltag.inference import configure_runtime

    plan = configure_runtime(cores=cpus)
    with contextlib.suppress(RuntimeError):  # the inter-op pool of this process started already (a reused worker)
        torch.set_num_interop_threads(1)
    return ActorThreads(cpus=cpus, decode=plan.decode_threads, torch=torch.get_num_threads(),
                        interop=torch.get_num_interop_threads())


@dataclass(frozen=True)
class Record:
    """One file's outcome as an actor returns it: the result (or failure), and with ``--write-tags`` what
    writing the tags into the file did (``tag_write``: the writer's status; ``tag_problem``: why it failed)."""

    result: TagResult | TagFailure
    tag_write: str = ""
    tag_problem: str = ""


class TagWorker:
    """A model actor's state: its process set up for ``cpus`` CPUs, then (:meth:`load`) one tagger for the
    actor's life and ``--write-tags``' writer.

    Args:
        cpus: whole CPUs the actor holds (its threads are budgeted to them).
    """

    def __init__(self, cpus: int) -> None:
        started = time.perf_counter()
        self.threads = configure_threads(cpus)
        import focaltag.inference.tagger  # noqa: F401  (the tagger's imports belong to start-up, not to load)

        self.init_seconds = time.perf_counter() - started
        self.load_seconds = 0.0
        self.tagger: Tagger | None = None
        self.writer: Any = None
        self.files = 0
        self.busy_seconds = 0.0

    def load(self, model_box: Sequence[Any], options: Mapping[str, Any], device: str = "cpu",
             writer_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Build the actor's tagger; returns :meth:`stats`.

        Args:
            model_box: ``[ObjectRef]`` of the driver's :class:`ResolvedModel` with its members loaded (boxed in a
                list so that Ray hands the reference over instead of resolving it in transit).
            options: :func:`tagger_options`.
            device: ``"cpu"`` or ``"cuda"``.
            writer_kwargs: :class:`~focaltag.outputs.filetags.FileTagWriter` arguments for ``--write-tags``.
        """
        import ray

        started = time.perf_counter()
        model = ray.get(model_box[0])
        self.tagger = new_tagger(model, options, device=device, workers=self.threads.decode)
        if writer_kwargs is not None:
            from focaltag.outputs.filetags import FileTagWriter

            self.writer = FileTagWriter(self.tagger.tag_names, thresholds=self.tagger.thresholds, **writer_kwargs)
        self.load_seconds = time.perf_counter() - started
        return self.stats()

    @property
    def loaded_tagger(self) -> Tagger:
        """The tagger :meth:`load` built (a call before it is a driver bug)."""
        if self.tagger is None:
            raise RuntimeError("TagWorker used before TagWorker.load: the driver hands the model over first")
        return self.tagger

    def ready(self) -> dict[str, Any]:
        """Called once by the driver: the actor is up; what it runs on."""
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """The actor's process, threads and work so far (the driver logs them; ``bench/ray.py`` reports them)."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                **dataclasses.asdict(self.threads), "init_s": round(self.init_seconds, 3),
                "load_s": round(self.load_seconds, 3),
                "malloc_tunables": "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""),
                "files": self.files, "busy_s": round(self.busy_seconds, 3),
                "process_cpu_s": round(time.process_time(), 3)}

    def tag(self, items: Sequence[tuple[str, bytes | None]]) -> list[Record]:
        """Tag ``(path, bytes or None)`` items in order: a path is read where it is (every node sees it at the
        same path); bytes (object storage) are read from a private temporary file named like the original."""
        tagger = self.loaded_tagger
        started = time.perf_counter()
        temps: dict[str, str] = {}
        try:
            paths = [path if data is None else temps.setdefault(path, _spill(path, data)) for path, data in items]
            results = list(tagger.tag_many(paths))
        finally:
            for tmp in temps.values():
                os.unlink(tmp)
        records = [self._record(path, temps.get(path), result)
                   for (path, _), result in zip(items, results, strict=True)]
        self.files += len(items)
        self.busy_seconds += time.perf_counter() - started
        return records

    def _record(self, path: str, tmp: str | None, result: TagResult | TagFailure) -> Record:
        from focaltag.inference import TagFailure

        if isinstance(result, TagFailure):  # the exception object stays here: it need not pickle
            error = result.error if tmp is None else result.error.replace(tmp, path)
            return Record(TagFailure(path, error, model=result.model))
        if tmp is not None:
            return Record(dataclasses.replace(result, file=path))
        if self.writer is None:
            return Record(result)
        outcome = self.writer(result)
        problem = (outcome.reason or "") if outcome.status == "failed" else ""
        return Record(result, tag_write=outcome.status, tag_problem=problem)


def _spill(path: str, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix.lower() or ".audio", prefix="focaltag-ray-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return tmp
