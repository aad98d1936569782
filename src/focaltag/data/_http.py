"""The one HTTP client of focaltag (standard library only): resumable, retried, verified single-file fetches.

Shared by the dataset archives (``data.download``) and the git-blob-pinned files (``data.pinned``: model
checkpoints, dataset metadata), so resume, retries, HTML detection and error wording behave the same everywhere.
A fetch writes ``<final>.part`` (resumed with HTTP Range), asks the caller's ``check`` whether the bytes are the
right ones, and only then renames the part to its final name, so a wrong or partial file never has that name.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focaltag._progress import progress
from focaltag._version import __version__
from focaltag.errors import DownloadError

__all__ = ["Transient", "WrongSettings", "Unreachable", "FetchSpec", "request", "check_not_html", "http_error",
           "head_size", "fetch_once", "fetch_verified"]

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx, checksum mismatch)."""


class WrongSettings(DownloadError):
    """404 or an HTML page: the URL settings are wrong, so stop at once with one error instead of 100."""


class Unreachable(DownloadError):
    """Connection refused or unknown host after every retry; ``reason`` is the last low-level error."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchSpec:
    """How to fetch one file and how to word its errors.

    ``what`` names the expected content in messages ("a tar archive"); ``hint`` is the fix appended to a 404 or
    HTML-page error ("check --base-url ..."); ``on_bytes`` is called with each received block's length.
    """

    what: str = "the file"
    hint: str = "check the URL"
    retries: int = 3
    backoff: float = 2.0
    timeout: float = 60.0
    chunk_size: int = CHUNK
    retry_unreachable: bool = True
    on_bytes: Callable[[int], None] | None = None


def request(url: str, *, method: str = "GET", start: int = 0, timeout: float) -> Any:
    """urlopen with focaltag's User-Agent, no content encoding, and ``Range: bytes=start-`` when resuming."""
    headers = {"User-Agent": f"focaltag/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method), timeout=timeout)


def check_not_html(url: str, content_type: str, head: bytes = b"", *, what: str = "the file",
                   hint: str = "check the URL") -> None:
    """Raise WrongSettings when the server answered with an HTML page (a login wall, a moved mirror)."""
    sniff = head.lstrip()[:15].lower()
    if "text/html" in content_type.lower() or sniff.startswith((b"<!doctype html", b"<html")):
        raise WrongSettings(f"{url} returned an HTML page instead of {what}; the mirror may have moved: {hint}")


def http_error(url: str, err: urllib.error.HTTPError, *, hint: str = "check the URL") -> Exception:
    """Map an HTTP error to Transient (retry), WrongSettings (404: stop) or DownloadError."""
    if err.code in TRANSIENT_HTTP:
        return Transient(f"HTTP {err.code} {err.reason}")
    if err.code == 404:
        return WrongSettings(f"{url} does not exist on the server (HTTP 404); {hint}")
    return DownloadError(f"{url} failed with HTTP {err.code} {err.reason}")


def head_size(url: str, timeout: float, *, what: str = "the file",
              hint: str = "check the URL") -> tuple[int | None, str | None]:
    """(size, problem) from a HEAD request; never raises."""
    try:
        with request(url, method="HEAD", timeout=timeout) as resp:
            check_not_html(url, resp.headers.get("Content-Type", ""), what=what, hint=hint)
            length = resp.headers.get("Content-Length")
            return (int(length) if length and length.isdigit() else None), None
    except DownloadError as err:
        return None, str(err)
    except urllib.error.HTTPError as err:
        return None, f"HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        return None, f"unreachable ({err})"


def fetch_once(url: str, part: Path, *, spec: FetchSpec, desc: str) -> int:
    """Append the rest of ``url`` to ``part`` (Range resume); return the offset it resumed from.

    Raises Transient on a short body or a bad Content-Range, WrongSettings on 404 / HTML.
    """
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = request(url, start=start, timeout=spec.timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the part already holds the whole file (or more): let the check decide
            return start
        raise http_error(url, err, hint=spec.hint) from None
    received = 0
    with resp:
        status = getattr(resp, "status", 200)
        content_type = resp.headers.get("Content-Type", "")
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if start and status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {start}-"):
                raise Transient(f"server answered Range {start}- with Content-Range {crange!r}")
            mode = "ab"
        else:
            start, mode = 0, "wb"  # the server ignored Range (200): start over
        first = resp.read(min(spec.chunk_size, 4096))
        check_not_html(url, content_type, first if start == 0 else b"", what=spec.what, hint=spec.hint)
        total = start + length if length is not None else None
        with part.open(mode) as fh, progress(desc=desc, total=total, unit="B", unit_scale=True,
                                             unit_divisor=1024, initial=start) as bar:
            block = first
            while block:
                fh.write(block)
                received += len(block)
                if spec.on_bytes is not None:
                    spec.on_bytes(len(block))
                bar.update(len(block))
                block = resp.read(spec.chunk_size)
    if length is not None and received < length:
        raise Transient(f"connection dropped after {start + received:,} of {start + length:,} bytes")
    return start


def fetch_verified(url: str, final: Path, *, check: Callable[[Path, int], str | None], spec: FetchSpec,
                   desc: str, label: str | None = None) -> None:
    """Fetch ``url`` into ``final`` via ``final.part`` until ``check(part, resumed_from)`` returns None.

    ``check`` returns None when the bytes are right, a short reason to delete the part and retry, or raises
    DownloadError to stop at once. Gives up with one DownloadError line after ``spec.retries`` retries;
    ``Unreachable`` when the host could never be reached.
    """
    label = label or final.name
    part = final.with_name(final.name + ".part")
    last, low, unreachable = "no attempt", "", False
    for attempt in range(spec.retries + 1):
        if attempt:
            delay = spec.backoff * 2 ** (attempt - 1)
            logger.warning("%s: %s; retry %d/%d in %.1f s", label, last, attempt, spec.retries, delay)
            time.sleep(delay)
        try:
            resumed_from = fetch_once(url, part, spec=spec, desc=desc)
        except Transient as err:
            last, unreachable = str(err), False
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            if isinstance(err, urllib.error.URLError) and not isinstance(reason, OSError):
                raise DownloadError(f"{url}: {reason}") from None
            # refused / unknown host: nothing was reached at all (a drop mid-transfer is not this)
            unreachable = isinstance(reason, (ConnectionRefusedError, socket.gaierror))
            last, low = f"connection problem ({reason})", str(reason)
            if unreachable and not spec.retry_unreachable:
                break
            continue
        problem = check(part, resumed_from)
        if problem is None:
            os.replace(part, final)
            return
        last, unreachable = problem, False
        part.unlink(missing_ok=True)
    message = f"{label}: giving up after {attempt + 1} attempt{'s' if attempt else ''}: {last}"
    raise Unreachable(message, reason=low) if unreachable else DownloadError(message)
