"""Files pinned to a GitHub commit and checked by their git blob id (the SHA-1 that ``git ls-tree`` prints).

A pin names ``owner/repo@commit:path`` and the blob id of the file at that commit. It is served at
``<base>/<owner>/<repo>/<commit>/<path>``: ``https://raw.githubusercontent.com`` by default, or a mirror with the
same layout (air-gapped sites, tests). The blob id is checked before the file gets its final name, so a wrong
byte, a truncated transfer or an error page is never cached; the git blob id is used (not SHA-256) because it is
what the source repository itself records, so anyone can check a pin with ``git ls-tree <commit> <path>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from focaltag.data._http import FetchSpec, Unreachable, fetch_verified
from focaltag.errors import DownloadError

__all__ = ["DEFAULT_BASE", "Pin", "git_blob_sha1", "pinned_url", "verify_pinned", "fetch_pinned"]

DEFAULT_BASE = "https://raw.githubusercontent.com"
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_BLOCK = 1 << 20


def git_blob_sha1(data_or_path: bytes | str | os.PathLike[str]) -> str:
    """The git blob id of some bytes or of a file: sha1 of ``b"blob <size>\\0"`` followed by the bytes."""
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = bytes(data_or_path)
        return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    path = Path(data_or_path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Pin:
    """One file of a repository at a commit: ``repo`` is ``owner/name``, ``blob`` its git blob id."""

    repo: str
    commit: str
    path: str
    blob: str
    size: int | None = None

    def __post_init__(self) -> None:
        if self.repo.count("/") != 1 or not all(self.repo.split("/")):
            raise DownloadError(f"pin repository must be 'owner/name', got {self.repo!r}")
        for name, value in (("commit", self.commit), ("blob", self.blob)):
            if not _HEX40.match(value):
                raise DownloadError(f"pin {name} of {self.repo}:{self.path} must be 40 lowercase hex digits, "
                                    f"got {value!r}")
        parts = self.path.split("/")
        if not self.path or self.path.startswith("/") or ".." in parts or "" in parts:
            raise DownloadError(f"pin path must be relative inside the repository, got {self.path!r}")
        if self.size is not None and self.size < 0:
            raise DownloadError(f"pin size of {self.path} must be >= 0, got {self.size}")

    @classmethod
    def parse(cls, spec: str, blob: str, size: int | None = None) -> Pin:
        """Build a pin from ``owner/repo@commit:path``."""
        repo, sep, rest = spec.partition("@")
        commit, sep2, path = rest.partition(":")
        if not (sep and sep2):
            raise DownloadError(f"pin must read 'owner/repo@commit:path', got {spec!r}")
        return cls(repo=repo, commit=commit, path=path, blob=blob, size=size)

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit}:{self.path}"


def pinned_url(pin: Pin, base: str | None = None) -> str:
    """``<base>/<owner>/<repo>/<commit>/<path>``; ``base`` None or empty means raw.githubusercontent.com."""
    base = (base or DEFAULT_BASE).rstrip("/")
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"mirror must be an http(s):// or file:// URL, got {base!r}")
    return "/".join([base, pin.repo, pin.commit, urllib.parse.quote(pin.path)])


def blob_problem(path: str | os.PathLike[str], pin: Pin) -> str | None:
    """None when ``path`` holds exactly the pinned bytes, else a short reason (size first: it is cheaper)."""
    size = Path(path).stat().st_size
    if pin.size is not None and size != pin.size:
        kind = "truncated" if size < pin.size else "too long"
        return f"{kind}: {size:,} bytes, expected {pin.size:,}"
    blob = git_blob_sha1(path)
    if blob != pin.blob:
        return f"git blob {blob[:12]}... differs from the pinned {pin.blob[:12]}..."
    return None


def verify_pinned(path: str | os.PathLike[str], pin: Pin) -> None:
    """Raise DownloadError (one line) unless the file at ``path`` is the pinned blob."""
    problem = blob_problem(path, pin)
    if problem is not None:
        raise DownloadError(f"{path} is not {pin.repo}@{pin.commit[:12]}:{pin.path} ({problem}); "
                            "get the file from that commit")


def fetch_pinned(pin: Pin, dest: str | os.PathLike[str], *, base: str | None = None, retries: int = 3,
                 backoff: float = 1.0, timeout: float = 60.0, hint: str | None = None,
                 desc: str | None = None, deadline: float | None = None) -> Path:
    """Download the pinned file to ``dest`` unless a verified copy is already there; return ``dest``.

    Resumes a ``dest.part`` left by an interrupted run, retries dropped connections and 5xx, shows a progress
    bar, and renames the part to ``dest`` only after its blob id matches. A mismatch on a fresh transfer is the
    server's bytes, so it stops at once; on a resumed one the part is discarded and fetched again. No network,
    404, an HTML page, or a wrong file: DownloadError with one line (``hint`` says how else to get the file).
    A body over the pin's size is refused as soon as it is declared or passes it; ``timeout`` is the idle limit
    of a read and ``deadline`` the seconds one attempt may take (default: 60 s + 1 s per 100 kB of the pin).
    """
    if retries < 0 or backoff < 0 or timeout <= 0 or (deadline is not None and deadline <= 0):
        raise DownloadError(f"retries and backoff must be >= 0 and timeout > 0; got retries={retries}, "
                            f"backoff={backoff}, timeout={timeout}")
    dest = Path(dest)
    if dest.is_file() and blob_problem(dest, pin) is None:
        return dest
    url = pinned_url(pin, base)
    where = "the mirror" if base else "github"
    fix = hint or ("pass --mirror URL for a mirror" if not base else "check the mirror URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()  # a stale or wrong copy must not survive under the final name if the fetch fails

    def check(part: Path, resumed_from: int) -> str | None:
        problem = blob_problem(part, pin)
        if problem is not None and resumed_from == 0:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server sent the wrong bytes ({problem}); nothing was saved; {fix}")
        return None if problem is None else f"resumed file is wrong ({problem}); fetching it again"

    spec = FetchSpec(what=pin.path.rsplit("/", 1)[-1], hint=fix, retries=retries, backoff=backoff,
                     timeout=timeout, retry_unreachable=False, max_bytes=pin.size, deadline=deadline)
    try:
        fetch_verified(url, dest, check=check, spec=spec, desc=desc or dest.name, label=url)
    except Unreachable as err:
        host = urllib.parse.urlsplit(url).netloc or where
        raise DownloadError(f"{host} cannot be reached ({err.reason}); {fix}") from None
    return dest
