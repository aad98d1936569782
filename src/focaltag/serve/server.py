"""Run the application under uvicorn until Ctrl-C (or SIGTERM), then shut down cleanly."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from focaltag.serve.config import ServeConfig
from focaltag.serve.registry import ModelRegistry

__all__ = ["run_server", "host_warning"]

logger = logging.getLogger(__name__)


def host_warning(config: ServeConfig) -> str | None:
    """One line when the server listens beyond this machine (None for loopback hosts)."""
    if config.local_only:
        return None
    names = "" if config.allowed_hosts else (
        f"; it answers only requests for 127.0.0.1, localhost and {config.host}: add --allowed-host NAME for the "
        "name others call it by")
    return (f"focaltag serve: warning: listening on {config.host}, so other machines can reach it"
            + ("" if config.token else "; anyone on the network can use it, set --token") + names)


def run_server(registry: ModelRegistry, config: ServeConfig, *, access_log: bool = False,
               library: Any = None) -> None:
    """Serve until interrupted: running requests finish (up to 10 s), queued ones are dropped, the port is freed."""
    import uvicorn

    from focaltag.serve.app import create_app

    warning = host_warning(config)
    if warning:
        logger.warning("%s", warning)
    app = create_app(registry, config, library=library)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level="info" if access_log else "warning",
        access_log=access_log, timeout_graceful_shutdown=10, lifespan="on", server_header=False,
        log_config=None,
    ))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled after shutting down
        server.run()
    logger.info("focaltag serve: stopped")
