"""A pool of plain Ray actors kept busy by the driver: the loop under ``tag --ray`` and ``data prepare --ray``.

Why not Ray Data for these runs: its streaming executor, its helper actors (stats, autoscaling coordinator, usage
collection, actor location tracker) and its decoding tasks, each in worker processes that Ray starts and stops
as they idle, cost as much CPU as tagging itself on small nodes (README, "On a Ray cluster"). Here the driver
starts one long-lived actor per slot of the plan, keeps :data:`CALLS_PER_ACTOR` calls queued on each and waits on
their results, nothing else. A lost actor's calls are handed to the others; a replacement starts where the
cluster has room.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

from focaltag.errors import ConfigError, first_line

__all__ = ["ActorPool", "CALLS_PER_ACTOR", "MAX_ATTEMPTS", "START_TIMEOUT_S", "failure_reason"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

CALLS_PER_ACTOR = 2
"""Calls queued on each actor: the next one is already there when one finishes, so an actor never waits on the
driver, and a lost actor takes at most this many calls with it."""

START_TIMEOUT_S = 180.0
"""How long a run waits with no actor up (start-up imports torch and loads the model; a cluster whose CPUs other
jobs hold keeps an actor pending) before it gives up with one line."""

MAX_ATTEMPTS = 3
"""Actors one call may take down with it (a crash in a decoder, an out-of-memory kill) before its items are
given up as failures instead of being handed to another actor."""


def failure_reason(err: BaseException) -> str:
    """One line on why a Ray call failed: the user code's own exception line where there is one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(err)):
        return first_line(cause, default=type(cause).__name__)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):  # "SomeError: message", the last line of an actor creation's traceback
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    return lines[0] if lines else type(err).__name__


@dataclass
class _Call(Generic[T]):
    first: int
    items: list[T]
    attempts: int = 0


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any = None
    stats: dict[str, Any] = field(default_factory=dict)
    calls: int = 0


class ActorPool:
    """``size`` actors of ``actor_class`` (a ``ray.remote`` class with its options) built with ``args``; each
    has ``ready()`` and ``stats()`` methods returning a dict, and the method :meth:`run` calls.

    ``need`` says what one actor needs (messages); ``has_room`` tells whether the cluster's alive nodes could
    still host one (asked when every actor is lost).

    The actors start at once, so a pool made before the work is known (the driver's model not yet loaded) gets
    their start-up out of the way; :meth:`setup` then names a call every actor makes before its first work, and
    an actor is up once that call returns.
    """

    def __init__(self, actor_class: Any, args: Sequence[Any], size: int, *, need: str,
                 has_room: Callable[[], bool]) -> None:
        self.actor_class, self.args, self.size = actor_class, tuple(args), size
        self.need, self.has_room = need, has_room
        self.starting: dict[Any, _Actor] = {}  # ready() ref -> actor
        self.alive: list[_Actor] = []
        self.retired: list[dict[str, Any]] = []  # stats of actors lost during the run, as last seen
        self.lost = 0
        self.replacements = 2 * size  # at most: a replacement may be lost too
        self.setup_calls: list[tuple[str, tuple[Any, ...]]] = []
        for _ in range(size):
            self._start()

    def _start(self) -> None:
        actor = _Actor(self.actor_class.remote(*self.args))
        actor.ready_ref = actor.handle.ready.remote()
        for method, args in self.setup_calls:
            actor.ready_ref = getattr(actor.handle, method).remote(*args)
        self.starting[actor.ready_ref] = actor

    def setup(self, method: str, *args: Any) -> None:
        """Have every actor, started or to come (a replacement), call ``method(*args)`` before any work; its
        return value (a dict) becomes the actor's stats. An actor's calls run in order, so this one follows its
        constructor and ``ready()``; an exception in it ends the run with one line, as a failed constructor does."""
        self.setup_calls.append((method, tuple(args)))
        starting, self.starting = self.starting, {}
        for actor in starting.values():
            actor.ready_ref = getattr(actor.handle, method).remote(*args)
            self.starting[actor.ready_ref] = actor

    def run(self, items: Iterable[T], *, method: str, per_call: int,
            give_up: Callable[[list[T], str], list[R]], pause: Callable[[], bool] | None = None
            ) -> Iterator[tuple[int, list[R]]]:
        """Call ``method`` with ``per_call`` items at a time; yields ``(index of the first item, results)`` as
        calls finish (in any order). ``give_up(items, reason)`` turns the items of a call that took
        :data:`MAX_ATTEMPTS` actors down into results; ``pause()`` True holds back new items (not retries)."""
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

        import ray

        source = iter(items)
        exhausted, taken = False, 0
        retry: list[_Call[T]] = []
        in_flight: dict[Any, tuple[_Actor, _Call[T]]] = {}
        waiting_since = time.monotonic()
        while True:
            for actor in self.alive:  # every actor's queue full
                while actor.calls < CALLS_PER_ACTOR:
                    call = retry.pop(0) if retry else None
                    if call is None and not exhausted and not (pause is not None and pause()):
                        chunk = list(islice(source, per_call))
                        if chunk:
                            call, taken = _Call(taken, chunk), taken + len(chunk)
                        else:
                            exhausted = True
                    if call is None:
                        break
                    in_flight[getattr(actor.handle, method).remote(call.items)] = (actor, call)
                    actor.calls += 1
            if not in_flight and not retry and exhausted:
                return
            if not self.alive:
                if not self.starting or (self.lost and not self.has_room()):
                    raise self._no_room()
                if time.monotonic() - waiting_since > START_TIMEOUT_S:
                    raise self._no_start()
            else:
                waiting_since = time.monotonic()
            done, _ = ray.wait([*in_flight, *self.starting], num_returns=1, timeout=5.0)
            for ref in done:
                if ref in self.starting:
                    self._started(self.starting.pop(ref))
                    continue
                actor, call = in_flight.pop(ref)
                actor.calls -= 1
                try:
                    results = ray.get(ref)
                except (RayActorError, ObjectLostError) as err:  # an actor, or its node, lost
                    if isinstance(err, RayActorError):
                        self._lose(actor, err)
                    call.attempts += 1
                    if call.attempts < MAX_ATTEMPTS:
                        retry.append(call)
                        retry.sort(key=lambda c: c.first)
                        continue
                    results = give_up(call.items, f"a Ray actor died {call.attempts} times on it "
                                                  f"({failure_reason(err)})")
                except RayTaskError as err:
                    raise ConfigError(f"a Ray actor failed: {failure_reason(err)}") from None
                yield call.first, results

    def _started(self, actor: _Actor) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        import ray

        try:
            actor.stats = ray.get(actor.ready_ref)
        except RayTaskError as err:  # a setup call raised: every actor would fail alike
            raise ConfigError(f"the Ray actors could not start: {failure_reason(err)}") from None
        except RayActorError as err:
            if err.actor_init_failed:  # a setup error: every actor would fail alike
                raise ConfigError(f"the Ray actors could not start: {failure_reason(err)}") from None
            self._lose(actor, err)
            return
        self.alive.append(actor)
        logger.debug("Ray actor up: %s", actor.stats)

    def _lose(self, actor: _Actor, err: BaseException) -> None:
        import ray

        self.lost += 1
        if actor in self.alive:
            self.alive.remove(actor)
            self.retired.append(actor.stats)
            logger.warning("a Ray actor was lost (%s); its work goes to the others", failure_reason(err))
        ray.kill(actor.handle, no_restart=True)
        if len(self.alive) + len(self.starting) < self.size and self.replacements > 0:
            self.replacements -= 1
            self._start()

    def _no_room(self) -> ConfigError:
        return ConfigError(f"the Ray cluster lost every actor of this run and has no node left with {self.need} "
                           "for one; what was done is kept, and a rerun continues once nodes are back")

    def _no_start(self) -> ConfigError:
        return ConfigError(f"no Ray actor of this run started within {START_TIMEOUT_S:.0f} s (each needs "
                           f"{self.need}); 'ray status' shows what holds the cluster's resources; what was done "
                           "is kept, and a rerun continues")

    def close(self) -> list[dict[str, Any]]:
        """Stop the actors; returns each one's last stats (the lost ones' as last seen)."""
        import ray

        out = list(self.retired)
        refs = [(a, a.handle.stats.remote()) for a in self.alive]
        for actor, ref in refs:
            try:
                out.append(ray.get(ref, timeout=10))
            except Exception:  # noqa: BLE001  (stats are best effort: the run is over)
                out.append(actor.stats)
        for actor in [*self.alive, *self.starting.values()]:
            ray.kill(actor.handle, no_restart=True)
        self.alive, self.starting = [], {}
        return out
