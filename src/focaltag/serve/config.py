"""Settings of ``focaltag serve``, validated once when the server is set up (bad values: one line, exit 2)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from focaltag._extras import install_hint, require_extra
from focaltag.errors import ConfigError

__all__ = ["ServeConfig", "require_serve", "is_loopback", "INSTALL_HINT", "TOKEN_ENV"]

INSTALL_HINT = install_hint("serve")
TOKEN_ENV = "FOCALTAG_SERVE_TOKEN"
_SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")


def require_serve() -> None:
    """Raise one line naming the install command unless the server stack (the ``serve`` extra) is importable."""
    require_extra("serve", _SERVE_MODULES, what="focaltag serve")


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """How the server listens and how much work it accepts.

    ``queue`` bounds the requests admitted at once (running plus waiting); one more gets 503 at once instead of
    piling up memory. ``workers`` bounds the requests tagged at the same time, so a burst never needs more than
    one copy of each model and ``workers`` decoded tracks.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = 200 * 1024 * 1024
    queue: int = 16
    workers: int = 1
    max_files: int = 32
    read_timeout: float = 30.0  # seconds an upload may send nothing before it is cut off (408)
    request_timeout: float = 300.0  # seconds from the first byte to the answer (504 while tagging)
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback and --host ('*': any)

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("serve: --host must not be empty; use 127.0.0.1 to serve this machine only")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve: --port must be 0..65535, got {self.port}")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ConfigError(f"serve: the token (--token or {TOKEN_ENV}) must be non-empty without spaces")
        if self.max_upload_bytes < 1:
            raise ConfigError(f"serve: --max-upload-mb must be > 0, got {self.max_upload_bytes / 2**20:g}")
        if self.queue < 1:
            raise ConfigError(f"serve: --queue must be >= 1, got {self.queue}")
        if self.workers < 1:
            raise ConfigError(f"serve: --workers must be >= 1, got {self.workers}")
        if self.max_files < 1:
            raise ConfigError(f"serve: max_files must be >= 1, got {self.max_files}")
        if not self.read_timeout > 0:
            raise ConfigError(f"serve: --read-timeout must be > 0 seconds, got {self.read_timeout:g}")
        if not self.request_timeout > 0:
            raise ConfigError(f"serve: --request-timeout must be > 0 seconds, got {self.request_timeout:g}")
        for name in self.allowed_hosts:
            if not name or any(c.isspace() or c in "/@" for c in name):
                raise ConfigError(f"serve: --allowed-host must be a host name or address, got {name!r}")

    @classmethod
    def from_options(cls, *, host: str, port: int, token: str | None, max_upload_mb: float, queue: int,
                     workers: int, read_timeout: float = 30.0, request_timeout: float = 300.0,
                     allowed_hosts: tuple[str, ...] = ()) -> ServeConfig:
        """From CLI options; the token falls back to ``FOCALTAG_SERVE_TOKEN``."""
        if not max_upload_mb > 0:
            raise ConfigError(f"serve: --max-upload-mb must be > 0, got {max_upload_mb}")
        token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        return cls(host=host, port=port, token=token, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                   queue=queue, workers=workers, read_timeout=read_timeout, request_timeout=request_timeout,
                   allowed_hosts=tuple(allowed_hosts))

    @property
    def local_only(self) -> bool:
        return is_loopback(self.host)
