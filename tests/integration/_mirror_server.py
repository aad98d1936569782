"""A loopback mirror for pinned files (``<root>/<owner>/<repo>/<commit>/<path>``), with Range and injected faults.

Used by the tests of data/pinned.py and of the model catalogue (and usable for dataset metadata). The server runs
in a thread on 127.0.0.1; ``faults`` maps a URL path to one of:
``"drop:N"`` (announce the full length, send N bytes, close), ``"html"`` (a 200 HTML error page), ``"404"``,
``"flip"`` (one byte changed), ``"truncate:N"`` (a consistent but short file of N bytes), ``"500"``.
"""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Mirror:
    """What a test can read and steer: the base URL, the files, the faults and the requests seen."""

    url: str
    files: dict[str, bytes]
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, repo: str, commit: str, path: str, data: bytes) -> str:
        key = f"/{repo}/{commit}/{path}"
        self.files[key] = data
        return key

    def gets(self, key: str) -> list[str | None]:
        """The Range headers of the GET requests for ``key`` (None for a request without Range)."""
        return [rng for path, rng in self.requests if path == key]


def _handler(mirror: Mirror) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/octet-stream",
                  headers: dict[str, str] | None = None, announce: int | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if announce is None else announce))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            rng = self.headers.get("Range")
            if self.command == "GET":
                mirror.requests.append((key, rng))
            fault = mirror.faults.get(key, "")
            if fault == "404" or key not in mirror.files:
                return self._send(404, b"not found", "text/plain")
            if fault == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Rate limited</body></html>", "text/html")
            if fault == "500":
                return self._send(500, b"oops", "text/plain")
            data = mirror.files[key]
            if fault == "flip":
                pos = len(data) // 2
                data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
            if fault.startswith("truncate:"):
                data = data[: int(fault.split(":")[1])]
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                if start >= len(data):
                    return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            body = data[start:]
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            if fault.startswith("drop:"):
                mirror.faults.pop(key)  # fail once, then serve normally
                n = int(fault.split(":")[1])
                self._send(206 if start else 200, body[:n], headers=headers, announce=len(body))
                self.close_connection = True
                return None
            return self._send(206 if start else 200, body, headers=headers)

    return Handler


@contextmanager
def serve_mirror() -> Iterator[Mirror]:
    """Start a loopback mirror in a thread; stop it on exit."""
    mirror = Mirror(url="", files={})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(mirror))
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()


def free_port_url() -> str:
    """A loopback URL where nothing listens (for 'no network' tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tree_files(root: Path) -> list[str]:
    """Every file under ``root`` (relative POSIX names), for 'nothing cached' assertions."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
