"""The one HTTP client of focaltag (standard library only): resumable, retried, verified single-file fetches.

Shared by the dataset archives (``data.download``) and the git-blob-pinned files (``data.pinned``: model
checkpoints, dataset metadata), so resume, retries, HTML detection and error wording behave the same everywhere.
A fetch writes ``<final>.part`` (resumed with HTTP Range), asks the caller's ``check`` whether the bytes are the
right ones, and only then renames the part to its final name, so a wrong or partial file never has that name.

Every fetch is bounded, so a hostile or broken mirror cannot fill the disk or hang a run: a body larger than the
expected size (a pin's size) is refused as soon as its Content-Length declares it or the bytes pass it, and each
attempt has a total deadline besides the idle ``timeout``: ``deadline`` seconds when given, else 60 s plus 1 s
per 100 kB of the expected size (for a body of unknown size: the average must stay above 100 kB/s after the
first 60 s), so a server that drips a byte a second fails instead of running for days.
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

__all__ = ["Transient", "WrongSettings", "Unreachable", "TooLarge", "TooSlow", "FetchSpec", "request",
           "check_not_html", "http_error", "head_size", "fetch_once", "fetch_verified", "default_deadline", "cli_timeouts",
           "DEADLINE_GRACE", "MIN_RATE"]

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
DEADLINE_GRACE = 60.0  # seconds every fetch gets besides its size's share
MIN_RATE = 100_000  # bytes/s: slower than this on average, a fetch is a failure (1.7 MB: 77 s allowed)


def cli_timeouts(seconds: float | None) -> tuple[float, float | None]:
    """``--timeout S`` as (idle timeout, total deadline): S for both when given, else 60 s idle and the deadline
    scaled to each file's size."""
    return (DEADLINE_GRACE, None) if seconds is None else (seconds, seconds)


def default_deadline(size: int | None) -> float | None:
    """Seconds a fetch of ``size`` bytes may take in all: 60 s + size / (100 kB/s); None for an unknown size."""
    return None if size is None else DEADLINE_GRACE + size / MIN_RATE


class Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx, checksum mismatch)."""


class WrongSettings(DownloadError):
    """404 or an HTML page: the URL settings are wrong, so stop at once with one error instead of 100."""


class TooLarge(DownloadError):
    """The server declares or sends more bytes than the pin says: not the file, refused at once."""


class TooSlow(DownloadError):
    """The fetch passed its total deadline (a stalled or dripping server); the part is kept for a resume."""


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
    ``timeout`` is the idle limit of one read; ``max_bytes`` the expected size (more is refused); ``deadline``
    the total seconds of one attempt (None: :func:`default_deadline` of the expected size).
    """

    what: str = "the file"
    hint: str = "check the URL"
    retries: int = 3
    backoff: float = 2.0
    timeout: float = 60.0
    chunk_size: int = CHUNK
    retry_unreachable: bool = True
    on_bytes: Callable[[int], None] | None = None
    max_bytes: int | None = None
    deadline: float | None = None


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
    started = time.monotonic()
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
        limit = spec.max_bytes
        if limit is not None and length is not None and start + length > limit:
            part.unlink(missing_ok=True)
            raise TooLarge(f"{url} declares {start + length:,} bytes, more than the {limit:,} expected; nothing was "
                           f"kept; {spec.hint}")
        expected = limit - start if limit is not None else length
        allowed = spec.deadline if spec.deadline is not None else default_deadline(expected)
        first = _read_some(resp, min(spec.chunk_size, 4096))
        check_not_html(url, content_type, first if start == 0 else b"", what=spec.what, hint=spec.hint)
        total = start + length if length is not None else None
        with part.open(mode) as fh, progress(desc=desc, total=total, unit="B", unit_scale=True,
                                             unit_divisor=1024, initial=start) as bar:
            block = first
            while block:
                if limit is not None and start + received + len(block) > limit:
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise TooLarge(f"{url} sent more than the {limit:,} bytes expected; nothing was kept; "
                                   f"{spec.hint}")
                fh.write(block)
                received += len(block)
                if spec.on_bytes is not None:
                    spec.on_bytes(len(block))
                bar.update(len(block))
                _check_deadline(url, started, received, allowed)
                block = _read_some(resp, spec.chunk_size)
    if length is not None and received < length:
        raise Transient(f"connection dropped after {start + received:,} of {start + length:,} bytes")
    return start


def _read_some(resp: Any, size: int) -> bytes:
    """Up to ``size`` bytes, returning what has arrived (``read1``): a dripping server cannot hold one read for
    as long as it takes to send ``size`` bytes, so the deadline is checked after every arrival."""
    read1 = getattr(resp, "read1", None)
    return bytes(read1(size) if read1 is not None else resp.read(size))


def _check_deadline(url: str, started: float, received: int, allowed: float | None) -> None:
    elapsed = time.monotonic() - started
    limit = allowed if allowed is not None else DEADLINE_GRACE + received / MIN_RATE
    if elapsed > limit:
        raise TooSlow(f"{url}: only {received:,} bytes in {elapsed:.0f} s, past this file's deadline of {limit:.0f} s; "
                      "the server is too slow (a rerun resumes; --timeout S allows S seconds per file)")


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
