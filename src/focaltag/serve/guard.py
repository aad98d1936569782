"""The Host allow-list of ``focaltag serve``: a defence against DNS rebinding.

A page on any web site can make the browser send requests to ``http://evil.example:8000/`` after pointing that
name at 127.0.0.1; the browser then treats the server's answers as the page's own. Such requests carry the
attacker's name in the ``Host`` header, so a server that answers only the names it is known by is out of reach.
Allowed by default: ``127.0.0.1``, ``localhost`` and ``[::1]`` (any port), plus the ``--host`` given;
``--allowed-host`` adds names (``*`` allows any, for a server behind a proxy that checks names itself).

This is starlette's ``TrustedHostMiddleware`` idea, written out because its answer is plain text and older
starlette releases (which the ``serve`` extra allows) cut IPv6 literals at the first colon; this one answers the
API's JSON error naming the option that fixes it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_HOSTS", "HostGuard", "allowed_host_names", "host_name"]

logger = logging.getLogger(__name__)

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_HOST = re.compile(r"^(?P<name>\[[0-9A-Fa-f:.]+\]|[^\[\]:/@\s]+)(?::(?P<port>[0-9]{1,5}))?$")


def _normal(name: str) -> str:
    """Lower case, no trailing dot; an IPv6 address in brackets (``::1`` -> ``[::1]``)."""
    name = name.strip().lower().rstrip(".")
    bare = name.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def host_name(header: str | None) -> str | None:
    """The name part of a ``Host`` header, normalised; None when the header is missing or malformed."""
    match = _HOST.match(header or "")
    if match is None:
        return None
    if match["port"] is not None and int(match["port"]) > 65535:
        return None
    return _normal(match["name"])


def allowed_host_names(listen_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server listening on ``listen_host`` answers: the loopback names, ``listen_host``, ``extra``."""
    names = {_normal(n) for n in (*DEFAULT_HOSTS, listen_host, *extra) if n}
    names.discard("0.0.0.0")  # "any address" is where it listens, not a name anyone calls it by
    names.discard("[::]")
    return frozenset(names)


class HostGuard:
    """ASGI middleware: HTTP requests whose Host is not allowed get a JSON 400."""

    def __init__(self, app: Any, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed
        self.allow_any = "*" in allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.allow_any or scope["type"] != "http":  # lifespan; the app has no websockets
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
        name = host_name(header)
        if name is not None and name in self.allowed:
            await self.app(scope, receive, send)
            return
        logger.info("focaltag serve: refused a request for Host %r", header)
        shown = ", ".join(sorted(self.allowed))
        body = json.dumps({"error": f"Host {header!r} is not one this server answers ({shown}); call it by one "
                           "of those names, or start it with --allowed-host NAME"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
