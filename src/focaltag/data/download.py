"""Resumable, verified download of the official MTG-Jamendo tar archives (standard library HTTP only).

Layout and names follow the official ``scripts/download/download.py`` of github.com/MTG/mtg-jamendo-dataset:
archives ``<dataset>_<type>-NN.tar`` listed in ``data/download/<dataset>_<type>_sha256_tars.txt`` are served at
``<base-url>/<dataset>/<type>/<archive>`` (the project's fast mirror is ``https://cdn.freesound.org/mtg-jamendo``).
Each archive is fetched into ``<archive>.part`` (resumed with HTTP Range), checked against its SHA-256, renamed,
unpacked into a staging folder with tar filter ``data``, its tracks checked against the tracks manifest, and moved
into place. A state file under ``<out>/.focaltag/`` records finished archives, so a second run fetches nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tarfile
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from focaltag._io import write_json
from focaltag._progress import progress
from focaltag.data._http import FetchSpec, Unreachable, WrongSettings, fetch_verified, head_size
from focaltag.data.manifest import manifest_files, read_manifest, sha256_file
from focaltag.errors import DownloadError

__all__ = ["DEFAULT_BASE_URL", "DATA_TYPES", "DownloadReport", "download_dataset", "archive_url"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://cdn.freesound.org/mtg-jamendo"
DATA_TYPES = ("audio", "audio-low", "melspecs")
STATE_DIR = ".focaltag"
_CHUNK = 1 << 20
_WHAT = "a tar archive"
_HINT = "check --base-url, --dataset and --type against the official download script"
_WrongSettings = WrongSettings  # HTTP primitives live in data/_http.py, shared with data/pinned.py
_Unreachable = Unreachable


@dataclass
class DownloadReport:
    """What a run did; ``failed`` maps archive -> reason (the CLI exits 1 when it is not empty)."""

    dataset: str
    data_type: str
    out: str
    dry_run: bool = False
    fetched: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0
    tracks_verified: int = 0
    tracks_unlisted: int = 0
    tracks_missing: int | None = None
    plan: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def archive_url(base_url: str, dataset: str, data_type: str, name: str) -> str:
    """``<base-url>/<dataset>/<type>/<archive>`` as the official mirror lays archives out."""
    return "/".join([base_url.rstrip("/"), urllib.parse.quote(dataset), urllib.parse.quote(data_type),
                     urllib.parse.quote(name)])


# --------------------------------------------------------------------------------------------- state file


def _state_path(out: Path, dataset: str, data_type: str) -> Path:
    return out / STATE_DIR / f"download-{dataset}_{data_type}.json"


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"version": 1, "archives": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state.get("archives"), dict):
            raise ValueError("no 'archives' mapping")
        return state
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable download state %s (%s); archives will be checked again", path, err)
        return {"version": 1, "archives": {}}


def _archive_done(entry: dict[str, Any] | None, sha: str, out: Path, tar_path: Path, unpack: bool) -> bool:
    """True when the state says this exact archive is finished and its result is still on disk."""
    if not entry or entry.get("sha256") != sha:
        return False
    if unpack:
        return bool(entry.get("unpacked")) and all((out / m).is_file() for m in entry.get("members", []))
    return bool(entry.get("verified")) and tar_path.is_file() and tar_path.stat().st_size == entry.get("size")


# --------------------------------------------------------------------------------------------- HTTP


def _head_size(url: str, timeout: float) -> tuple[int | None, str | None]:
    """(size, problem) from a HEAD request; never raises."""
    return head_size(url, timeout, what=_WHAT, hint=_HINT)


# --------------------------------------------------------------------------------------------- tar handling


def _safe_members(tar: tarfile.TarFile, tar_path: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders with relative names that stay inside the output folder; anything else refused."""
    members = tar.getmembers()
    for m in members:
        pure = PurePosixPath(m.name)
        if pure.is_absolute() or ".." in pure.parts or m.name.startswith("\\") or pure.parts[:1] == (STATE_DIR,):
            raise DownloadError(f"{tar_path.name}: member {m.name!r} would be written outside the output folder; "
                                "refusing to unpack this archive")
        if not (m.isfile() or m.isdir()):
            raise DownloadError(f"{tar_path.name}: member {m.name!r} is a link or special file; refusing to unpack")
    return members


def _extract(tar_path: Path, staging: Path) -> list[str]:
    """Unpack into ``staging`` (filter 'data'), return the regular-file names (relative, POSIX)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(tar_path) as tar:
            members = _safe_members(tar, tar_path)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12; members were checked above
                tar.extractall(staging, members=members)
    except tarfile.TarError as err:
        raise DownloadError(f"{tar_path.name}: not a readable tar archive ({err}); delete it and run again") from None
    return [str(PurePosixPath(m.name)) for m in members if m.isfile()]


def _verify_and_move(names: list[str], staging: Path, out: Path, tracks: dict[str, str] | None,
                     archive: str) -> tuple[int, int]:
    """Check each extracted file against the tracks manifest, then move it to its final name."""
    verified = unlisted = 0
    if tracks is not None:
        for name in progress(names, desc=f"verify {archive}", unit="file"):
            expected = tracks.get(name)
            if expected is None:
                unlisted += 1
                continue
            if sha256_file(staging / name) != expected:
                raise DownloadError(f"{archive}: track {name} does not match its SHA-256 in the tracks manifest; "
                                    "the archive passed its own check, so the manifest and archive disagree")
            verified += 1
    for name in names:
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dest)
    shutil.rmtree(staging, ignore_errors=True)
    return verified, unlisted


# --------------------------------------------------------------------------------------------- main entry


@dataclass(frozen=True)
class _Job:
    """Settings shared by every archive of one run."""

    out: Path
    dataset: str
    data_type: str
    base_url: str
    unpack: bool
    keep_tars: bool
    retries: int
    backoff: float
    timeout: float
    chunk_size: int
    tracks: dict[str, str] | None
    state_file: Path
    deadline: float | None = None


def _fetch_verified(job: _Job, name: str, sha: str, report: DownloadReport) -> None:
    """Download ``name`` to ``out/name`` (via ``.part``) until its SHA-256 matches, or raise DownloadError."""
    url = archive_url(job.base_url, job.dataset, job.data_type, name)

    def count(n: int) -> None:
        report.bytes_downloaded += n

    def check(part: Path, _resumed_from: int) -> str | None:
        digest = sha256_file(part)
        return None if digest == sha else f"SHA-256 mismatch (got {digest[:12]}..., expected {sha[:12]}...)"

    spec = FetchSpec(what=_WHAT, hint=_HINT, retries=job.retries, backoff=job.backoff, timeout=job.timeout,
                     chunk_size=job.chunk_size, on_bytes=count, deadline=job.deadline)
    fetch_verified(url, job.out / name, check=check, spec=spec, desc=name, label=name)


def _process(job: _Job, name: str, sha: str, state: dict[str, Any], report: DownloadReport) -> None:
    """Fetch (unless a verified copy is here), record, unpack and verify one archive."""
    tar_path = job.out / name
    entry = state["archives"].get(name) or {}
    have_tar = tar_path.is_file() and (entry.get("sha256") == sha and entry.get("verified")
                                       and entry.get("size") == tar_path.stat().st_size
                                       or sha256_file(tar_path) == sha)
    if not have_tar:
        if tar_path.exists():
            logger.warning("%s does not match its SHA-256; fetching it again", tar_path)
            tar_path.unlink()
        _fetch_verified(job, name, sha, report)
        report.fetched.append(name)
    entry = {"sha256": sha, "verified": True, "size": tar_path.stat().st_size}
    state["archives"][name] = entry
    write_json(job.state_file, state)
    if not job.unpack:
        return
    staging = job.out / STATE_DIR / f"staging-{name}"
    try:
        members = _extract(tar_path, staging)
        verified, unlisted = _verify_and_move(members, staging, job.out, job.tracks, name)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    report.tracks_verified += verified
    report.tracks_unlisted += unlisted
    entry.update(unpacked=True, members=members)
    write_json(job.state_file, state)  # before deleting the tar: a crash in between costs no re-download
    if not job.keep_tars:
        tar_path.unlink()
    report.unpacked.append(name)


def download_dataset(out: str | os.PathLike[str], *, dataset: str = "autotagging_moodtheme",
                     data_type: str = "audio-low", manifest_dir: str | os.PathLike[str],
                     base_url: str = DEFAULT_BASE_URL, unpack: bool = True, keep_tars: bool = False,
                     dry_run: bool = False, only: list[str] | None = None, retries: int = 3,
                     backoff: float = 2.0, timeout: float = 60.0, chunk_size: int = _CHUNK,
                     deadline: float | None = None) -> DownloadReport:
    """Fetch, verify and (by default) unpack every archive of ``<dataset>_<type>``; idempotent and resumable.

    Archive-level failures after ``retries`` are collected in ``report.failed`` and the rest continues; a 404,
    an HTML page, an unreachable server (before anything succeeded) or a bad manifest raises at once.
    ``timeout`` is the idle limit of a read, ``deadline`` the seconds one archive may take (default: 60 s, plus
    1 s per 100 kB the server declares; an archive of unknown size must average 100 kB/s after 60 s).
    """
    if retries < 0 or backoff < 0 or timeout <= 0 or chunk_size < 1:
        raise DownloadError(f"retries and backoff must be >= 0, timeout and chunk_size > 0; got retries={retries}, "
                            f"backoff={backoff}, timeout={timeout}, chunk_size={chunk_size}")
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"--base-url must be an http(s):// or file:// URL, got {base_url!r}")
    out = Path(out)
    tars_file, tracks_file = manifest_files(manifest_dir, dataset, data_type)
    if not tars_file.is_file():
        raise DownloadError(f"archive manifest {tars_file} not found; clone the official repository (git clone "
                            "https://github.com/MTG/mtg-jamendo-dataset) and pass --manifest-dir "
                            "mtg-jamendo-dataset/data/download")
    archives = all_archives = read_manifest(tars_file)
    tracks = read_manifest(tracks_file) if tracks_file.is_file() else None
    if only:
        wanted = {o if o.endswith(".tar") else f"{dataset}_{data_type}-{o}.tar" for o in only}
        unknown = sorted(wanted - set(archives))
        if unknown:
            raise DownloadError(f"--only names archives not in {tars_file.name}: {', '.join(unknown)}")
        archives = {k: v for k, v in archives.items() if k in wanted}
    report = DownloadReport(dataset=dataset, data_type=data_type, out=str(out), dry_run=dry_run)
    state_file = _state_path(out, dataset, data_type)
    state = _load_state(state_file)
    if tracks is None and unpack:
        logger.info("no tracks manifest (%s): extracted tracks are not checked one by one", tracks_file.name)
    if dry_run:
        return _plan(archives, state, out, report, base_url=base_url, unpack=unpack, timeout=timeout)

    job = _Job(out, dataset, data_type, base_url, unpack, keep_tars, retries, backoff, timeout, chunk_size, tracks,
               state_file, deadline)
    out.mkdir(parents=True, exist_ok=True)
    with progress(desc="archives", total=len(archives), unit="tar") as bar:
        for name, sha in archives.items():
            if _archive_done(state["archives"].get(name), sha, out, out / name, unpack):
                report.skipped.append(name)
            else:
                try:
                    _process(job, name, sha, state, report)
                except _Unreachable as err:
                    if not (report.fetched or report.skipped):
                        raise DownloadError(f"{err}; the server cannot be reached: check the network and "
                                            "--base-url") from None
                    logger.error("%s", err)
                    report.failed[name] = str(err)
                except _WrongSettings:
                    raise
                except DownloadError as err:
                    logger.error("%s", err)
                    report.failed[name] = str(err)
            bar.update(1)
    _check_completeness(state, all_archives, tracks, unpack, report)
    return report


def _check_completeness(state: dict[str, Any], archives: dict[str, str], tracks: dict[str, str] | None,
                        unpack: bool, report: DownloadReport) -> None:
    """Once every archive of the manifest is unpacked, warn about manifest tracks that no archive contained."""
    if tracks is None or not unpack or report.failed:
        return
    entries = state["archives"]
    if not all(entries.get(n, {}).get("unpacked") and entries[n].get("sha256") == sha
               for n, sha in archives.items()):
        return
    seen = {m for n in archives for m in entries[n].get("members", [])}
    missing = sorted(set(tracks) - seen)
    report.tracks_missing = len(missing)
    if missing:
        logger.warning("%d track(s) of the tracks manifest were in none of the archives (e.g. %s)",
                       len(missing), missing[0])


def _plan(archives: dict[str, str], state: dict[str, Any], out: Path, report: DownloadReport, *,
          base_url: str, unpack: bool, timeout: float) -> DownloadReport:
    """Fill ``report.plan`` with what a real run would do, sizes from HEAD requests when the server gives them."""
    sizes_known = True
    total = 0
    for name, sha in archives.items():
        tar_path, part = out / name, out / (name + ".part")
        url = archive_url(base_url, report.dataset, report.data_type, name)
        item: dict[str, Any] = {"archive": name, "url": url}
        if _archive_done(state["archives"].get(name), sha, out, tar_path, unpack):
            item["action"] = "skip (done)"
            report.skipped.append(name)
        elif tar_path.is_file():
            item["action"] = "verify local archive" + (" and unpack" if unpack else "")
        else:
            size, problem = _head_size(url, timeout)
            have = part.stat().st_size if part.is_file() else 0
            item["action"] = f"resume ({have:,} bytes present)" if have else "fetch"
            item["size"] = size
            if problem:
                item["problem"] = problem
            if size is None:
                sizes_known = False
            else:
                total += max(0, size - have)
        report.plan.append(item)
    report.total_bytes = total if sizes_known else None
    return report
