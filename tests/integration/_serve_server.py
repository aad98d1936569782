"""Start a real ``focaltag serve`` process on 127.0.0.1 for the serve tests (API, browser) and bench/serve.py.

A small random model is enough: the tests compare the server's output with ``focaltag tag``'s on the same
model, so the numbers need not be meaningful, only the same.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_SECONDS = 120.0


def need(module: str, reason: str) -> object:
    """Import ``module`` or skip the test module; under CI=true a missing module fails instead of skipping."""
    import importlib

    import pytest

    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def small_model(path: Path) -> Path:
    """A tiny short-chunk ResNet with the 56 mood/theme tags, saved as a focaltag checkpoint."""
    import focaltag

    if not path.exists():
        focaltag.save_model(focaltag.create_model("short_chunk_resnet", n_tags=56, width=8), path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path
    tmpdir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C (SIGINT), as a user stops it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def _wait_healthy(server: Server) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"focaltag serve exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"focaltag serve did not answer /healthz in {STARTUP_SECONDS:.0f} s:\n{server.log_text()}")


@contextmanager
def running_server(models: list[Path], workdir: Path, *extra: str, env: dict[str, str] | None = None
                   ) -> Iterator[Server]:
    """``focaltag serve -m ... --port <free>`` as a subprocess (its TMPDIR private to the test)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    tmpdir = workdir / "server-tmp"
    tmpdir.mkdir(exist_ok=True)
    log = workdir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "focaltag", "serve", "--port", str(port), *extra]
    for model in models:
        cmd += ["-m", str(model)]
    full_env = {**os.environ, "TMPDIR": str(tmpdir), **(env or {})}
    full_env.pop("FOCALTAG_SERVE_TOKEN", None) if "FOCALTAG_SERVE_TOKEN" not in (env or {}) else None
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                   stdin=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{port}", port, process, log, tmpdir)
    try:
        _wait_healthy(server)
        yield server
    finally:
        server.stop()
