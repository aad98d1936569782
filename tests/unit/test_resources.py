"""CPU resources: the thread budget's arithmetic and the allocator setting's effect on page faults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from focaltag._resources import thread_budget, tune_allocator


@pytest.mark.parametrize("cores", range(1, 65))
@pytest.mark.parametrize("workers", [0, 1, 2, 8])
def test_budget_never_exceeds_the_cores_from_four_on(cores: int, workers: int) -> None:
    decode, intra = thread_budget(workers, cores)
    assert intra >= 1 and 0 <= decode <= workers
    if cores >= 4:
        assert decode + intra == cores and decode == min(workers, cores // 4)
    else:  # below 4 cores: one decoding thread beside a network on every core (measured faster)
        assert intra == cores and decode == min(workers, 1)


def test_tune_allocator_is_idempotent() -> None:
    assert tune_allocator() == tune_allocator()


_PROBE = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "tune":
        from focaltag._resources import tune_allocator
        assert tune_allocator()
    import numpy as np
    sizes = [int(s * 2 ** 20) for s in (3, 20, 7, 28, 1.5, 12)]  # activation-like buffers under 32 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        buffers = [np.ones(n // 8) for n in sizes]
        del buffers
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_tuned_allocator_reuses_buffers_instead_of_faulting_pages_in() -> None:
    """Freed buffers stay in the process: allocating them again costs a small fraction of the page faults."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "FOCALTAG_MALLOC")}
    faults = {mode: int(subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                                       check=True, env=env).stdout) for mode in ("default", "tune")}
    # 30 rounds of ~72 MiB: glibc's defaults fault most pages in again every round (~18k pages a round)
    assert faults["tune"] * 5 < faults["default"], faults


# -- glibc malloc tunables at process start ------------------------------------------------------------------
def test_tunables_environment_only_where_the_user_chose_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from focaltag import _resources

    monkeypatch.setattr(_resources.sys, "platform", "linux")
    monkeypatch.setattr(_resources, "_is_glibc", lambda: True)
    env = _resources.tunables_environment({"PATH": "/bin"})
    assert env is not None and env["GLIBC_TUNABLES"] == _resources.GLIBC_MALLOC_TUNABLES and env["PATH"] == "/bin"
    assert _resources.tunables_environment(env) is None  # never twice
    for theirs in ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, {"GLIBC_TUNABLES": ""},
                   {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, {"FOCALTAG_MALLOC": "default"}):
        assert _resources.tunables_environment(dict(theirs)) is None, theirs
    monkeypatch.setattr(_resources, "_is_glibc", lambda: False)
    assert _resources.tunables_environment({}) is None  # musl: its allocator, its rules
    monkeypatch.setattr(_resources.sys, "platform", "darwin")
    monkeypatch.setattr(_resources, "_is_glibc", lambda: True)
    assert _resources.tunables_environment({}) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables exist on Linux only")
def test_network_commands_restart_once_with_the_tunables(tmp_path: Path) -> None:
    from focaltag import _resources

    if not _resources._is_glibc():
        pytest.skip("not a glibc system")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "FOCALTAG_MALLOC")}
    missing = str(tmp_path / "missing.mp3")

    def stderr(*args: str, **extra: str) -> str:
        out = subprocess.run([sys.executable, "-m", "focaltag", *args, "-v"], env={**env, **extra},
                             capture_output=True, text=True, timeout=300)
        return out.stderr

    assert "started with glibc malloc tunables" in stderr("tag", missing, "-m", missing)
    assert "started with glibc malloc tunables" not in stderr("models", "list")  # runs no network
    assert "started with glibc malloc tunables" not in stderr("tag", missing, "-m", missing,
                                                              GLIBC_TUNABLES="glibc.malloc.arena_max=2")


def test_the_restarted_process_gives_children_the_users_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from focaltag import _resources

    monkeypatch.setattr(_resources, "_started_tuned", None)
    monkeypatch.setenv("FOCALTAG_MALLOC_TUNED", "1")
    monkeypatch.setenv("GLIBC_TUNABLES", _resources.GLIBC_MALLOC_TUNABLES)
    assert _resources.started_with_tunables() and _resources.started_with_tunables()
    assert "GLIBC_TUNABLES" not in os.environ and "FOCALTAG_MALLOC_TUNED" not in os.environ


def test_ray_actors_start_with_the_tunables_a_local_run_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """``worker_environment`` (the ``env_vars`` of Ray actors) follows the console script's rule, also in a
    process the console script restarted (whose own tunables are removed from its environment)."""
    from focaltag import _resources

    monkeypatch.setattr(_resources.sys, "platform", "linux")
    monkeypatch.setattr(_resources, "_is_glibc", lambda: True)
    for var in ("GLIBC_TUNABLES", "LD_PRELOAD", "FOCALTAG_MALLOC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_resources, "_started_tuned", None)
    monkeypatch.setenv("FOCALTAG_MALLOC_TUNED", "1")  # the restarted `focaltag` process
    monkeypatch.setenv("GLIBC_TUNABLES", _resources.GLIBC_MALLOC_TUNABLES)
    assert _resources.worker_environment() == {"GLIBC_TUNABLES": _resources.GLIBC_MALLOC_TUNABLES}
    assert "GLIBC_TUNABLES" not in os.environ  # the driver's own children still get the user's environment
    for var, value in (("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"), ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"),
                       ("FOCALTAG_MALLOC", "default")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            assert _resources.worker_environment() == {}, var
    monkeypatch.setattr(_resources, "_is_glibc", lambda: False)
    assert _resources.worker_environment() == {}
