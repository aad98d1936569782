"""``focaltag data download``: a tag set's MTG-Jamendo split files and audio, verified, into one dataset root.

``--out DIR`` is the dataset root the shipped configs read: split files in ``DIR/splits/``, download manifests in
``DIR/download/`` (both fetched from the official repository at a pinned commit and checked against git blob ids
shipped in the package), audio in ``DIR/audio/NN/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command
from focaltag.data.tags import TAGSETS


def register(subparsers: Any) -> None:
    from focaltag.data.download import DATA_TYPES, DEFAULT_BASE_URL
    from focaltag.data.mtg_jamendo import MIRROR_ENV

    p = add_command(subparsers, "download", func=run,
                    help="download a tag set's split files and audio into a dataset root (verified, resumable)",
                    description="Fetch the split files (splits/split-{0..4}/autotagging_<tagset>-*.tsv) and download "
                    "manifests of an MTG-Jamendo tag set from the official repository at a pinned commit, each "
                    "checked against its git blob id, then download, verify and unpack the audio archives. "
                    "--out DIR becomes the dataset root the shipped configs read (DIR/splits, DIR/download, "
                    "DIR/audio). Rerunning fetches only what is missing; interrupted transfers resume.")
    p.add_argument("--tagset", default=None, choices=TAGSETS,
                   help="tag set (default: moodtheme); chooses the split files and the archive set (moodtheme has its "
                   "own archives, the other three come from the full dataset, raw_30s)")
    p.add_argument("--type", dest="data_type", default="audio-low", choices=DATA_TYPES,
                   help="audio (320 kbps MP3), audio-low (low-quality MP3) or melspecs")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="dataset root: DIR/splits, DIR/download and DIR/audio (DIR/melspecs for --type melspecs) "
                   "are written")
    p.add_argument("--metadata-only", action="store_true",
                   help="fetch the split files only (the manifests come with the audio)")
    p.add_argument("--audio-only", action="store_true",
                   help="fetch the audio only (the split files are there already, or come from elsewhere)")
    p.add_argument("--metadata-mirror", default=None, metavar="URL",
                   help=f"serve the pinned metadata from URL/<owner>/<repo>/<commit>/<path> instead of "
                   f"raw.githubusercontent.com (or set {MIRROR_ENV})")
    p.add_argument("--metadata-dir", type=Path, default=None, metavar="DIR",
                   help="copy the split files from this local folder (holding splits/split-N/, e.g. a clone's "
                   "data/) instead of fetching them; they are NOT checked against the pins")
    p.add_argument("--dataset", default=None,
                   help="experts: archive set as in the manifests (autotagging_moodtheme, raw_30s); default: the tag "
                   "set's")
    p.add_argument("--manifest-dir", type=Path, default=None, metavar="DIR",
                   help="experts: use the <dataset>_<type>_sha256_{tars,tracks}.txt of this local folder instead of "
                   "the pinned ones (they are NOT checked against the pins)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help="audio mirror root; archives are fetched from <base-url>/<dataset>/<type>/<archive>")
    p.add_argument("--only", nargs="+", default=None, metavar="NN",
                   help="fetch only these archives (numbers like 00 07, or full archive names)")
    p.add_argument("--no-unpack", dest="unpack", action="store_false",
                   help="only download and verify the tars, and keep them; without this flag each verified "
                   "archive is unpacked")
    p.add_argument("--keep-tars", action="store_true", help="keep each archive after a verified extraction")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be fetched and the total size (from HEAD requests); change nothing")
    p.add_argument("--retries", type=int, default=3, help="extra attempts per file after a failure")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry; doubles on each further retry")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds a file may take in all, and without data (default: 60 s without data, 60 s + 1 s per "
                   "100 kB of the file in all)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.resolve().parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return None


def _check_args(args: argparse.Namespace) -> None:
    from focaltag.errors import ConfigError

    if args.retries < 0 or args.backoff < 0 or (args.timeout is not None and args.timeout <= 0):
        raise ConfigError(f"--retries and --backoff must be >= 0 and --timeout > 0; got {args.retries}, "
                          f"{args.backoff}, {args.timeout}")
    if args.keep_tars and not args.unpack:
        raise ConfigError("--keep-tars has no effect with --no-unpack (the tars are always kept then)")
    if args.metadata_only and args.audio_only:
        raise ConfigError("--metadata-only and --audio-only exclude each other; give one (or neither: both)")
    if args.metadata_dir is not None and args.metadata_mirror is not None:
        raise ConfigError("--metadata-dir copies local split files, --metadata-mirror fetches them; give one")


def _metadata_plan(args: argparse.Namespace, tagset: str, dataset: str) -> tuple[list[Any], Path | None]:
    """(pinned files to have under --out, the folder of the archive manifests)."""
    from focaltag.data.mtg_jamendo import manifest_files_of, split_files_of
    from focaltag.errors import ConfigError

    wanted = []
    if not args.audio_only and args.metadata_dir is None:
        wanted += split_files_of(tagset)
    manifest_dir = None
    if not args.metadata_only:
        if args.manifest_dir is not None:
            manifest_dir = args.manifest_dir
        else:
            manifests = manifest_files_of(dataset, args.data_type)
            if not manifests:
                raise ConfigError(f"focaltag pins no download manifest for {dataset} {args.data_type}; pass "
                                  "--manifest-dir DIR (data/download of a clone of github.com/MTG/mtg-jamendo-dataset)")
            wanted += manifests
            manifest_dir = args.out / "download"
    return wanted, manifest_dir


def run(args: argparse.Namespace) -> int:
    from focaltag.data.dataset import DEFAULT_TAGSET
    from focaltag.data.mtg_jamendo import (
        LICENCE_NOTICE,
        archive_dataset,
        copy_local_metadata,
        fetch_metadata,
        mirror_from_env,
        missing_files,
    )

    _check_args(args)
    tagset = args.tagset or DEFAULT_TAGSET
    dataset = args.dataset or archive_dataset(tagset)
    mirror = mirror_from_env(args.metadata_mirror)
    wanted, manifest_dir = _metadata_plan(args, tagset, dataset)
    todo = missing_files(args.out, wanted)
    meta_bytes = sum(f.size for f in todo)
    if not args.audio_only:
        print(f"licence: {LICENCE_NOTICE}", file=sys.stderr)
    if not args.quiet or args.dry_run:
        print(f"metadata ({tagset}): {len(todo)} of {len(wanted)} pinned files to fetch, {_size(meta_bytes)}"
              + (f" (from {mirror})" if mirror and todo else ""), file=sys.stderr)
    result: dict[str, Any] = {"root": str(args.out), "tagset": tagset, "dataset": dataset,
                              "metadata": {"wanted": [f.local for f in wanted], "to_fetch": [f.local for f in todo],
                                           "bytes": meta_bytes, "copied": []}}
    if args.dry_run:
        audio = None
        if not args.metadata_only:
            audio = _audio(args, dataset, manifest_dir, announce=True, dry_run=True,
                           manifests_pending=any(f.local.startswith("download/") for f in todo))
        result["dry_run"] = True
        result["free_bytes"] = _free_bytes(args.out)
        return _finish(args, result, audio, dry_run=True)
    if args.metadata_dir is not None and not args.audio_only:
        result["metadata"]["copied"] = [str(p) for p in copy_local_metadata(args.metadata_dir, args.out, tagset)]
    from focaltag.data._http import cli_timeouts

    timeout, deadline = cli_timeouts(args.timeout)
    fetch_metadata(args.out, todo, mirror=mirror, retries=args.retries, backoff=args.backoff, timeout=timeout,
                   deadline=deadline)
    audio = None
    if not args.metadata_only:
        if not args.quiet:  # the size of what is left (HEAD requests), said before the first archive
            _audio(args, dataset, manifest_dir, announce=True, dry_run=True)
        audio = _audio(args, dataset, manifest_dir, announce=False, dry_run=False)
    return _finish(args, result, audio, dry_run=False)


def _audio(args: argparse.Namespace, dataset: str, manifest_dir: Path | None, *, announce: bool, dry_run: bool,
           manifests_pending: bool = False) -> Any:
    """Plan (``dry_run``) or run the archive download into ``--out/audio``; a plan is announced on stderr."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from focaltag.data._http import cli_timeouts
    from focaltag.data.download import download_dataset

    timeout, deadline = cli_timeouts(args.timeout)

    if dry_run and manifests_pending:
        if announce and not args.quiet:
            print(f"audio ({dataset} {args.data_type}): size known once the manifests are fetched", file=sys.stderr)
        return None
    if manifest_dir is None:  # _metadata_plan sets it whenever audio is fetched (not --metadata-only)
        from focaltag.errors import ConfigError

        raise ConfigError("download: no manifest folder for the audio; pass --manifest-dir DIR")
    with logging_redirect_tqdm():  # retry/failure messages print above the progress bars, not into them
        folder = args.out / ("melspecs" if args.data_type == "melspecs" else "audio")
        report = download_dataset(folder, dataset=dataset, data_type=args.data_type,
                                  manifest_dir=manifest_dir, base_url=args.base_url, unpack=args.unpack,
                                  keep_tars=args.keep_tars, dry_run=dry_run, only=args.only,
                                  retries=args.retries, backoff=args.backoff, timeout=timeout, deadline=deadline)
    if announce and (not args.quiet or args.dry_run):
        n = len([p for p in report.plan if not p["action"].startswith("skip")])
        print(f"audio ({dataset} {args.data_type}): {n} of {len(report.plan)} archives to fetch, "
              f"{_size(report.total_bytes)}; free space {_size(_free_bytes(args.out))}", file=sys.stderr)
    return report


def _finish(args: argparse.Namespace, result: dict[str, Any], report: Any, *, dry_run: bool) -> int:
    if report is not None:
        result.update(report.to_dict())
        result["out"] = str(args.out)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    elif dry_run:
        if report is not None:
            todo = [p for p in report.plan if not p["action"].startswith("skip")]
            for p in todo:
                extra = f"  [{p['problem']}]" if p.get("problem") else ""
                print(f"{p['action']:<28} {p['archive']}  {_size(p.get('size')) if 'size' in p else ''}{extra}")
            print(f"{len(todo)} of {len(report.plan)} archives to process, {len(report.skipped)} already done; "
                  f"total to download: {_size(report.total_bytes)}; free space: {_size(result['free_bytes'])}")
        for name in result["metadata"]["to_fetch"]:
            print(f"{'fetch (pinned)':<28} {name}")
    else:
        meta = result["metadata"]
        print(f"metadata: {len(meta['to_fetch'])} file(s) fetched and verified, "
              f"{len(meta['wanted']) - len(meta['to_fetch'])} already there, {len(meta['copied'])} copied; "
              f"dataset root {args.out}")
        if report is not None:
            print(f"audio: fetched {len(report.fetched)}, unpacked {len(report.unpacked)}, already done "
                  f"{len(report.skipped)}, failed {len(report.failed)}; {_size(report.bytes_downloaded)} downloaded, "
                  f"{report.tracks_verified} tracks verified")
            if report.tracks_missing:
                print(f"warning: {report.tracks_missing} track(s) of the tracks manifest were in no archive",
                      file=sys.stderr)
            if report.failed:  # each failure was already logged with its reason
                print(f"{len(report.failed)} archive(s) failed: {', '.join(report.failed)}; rerun the same command "
                      "to retry them (finished archives and partial downloads are kept)", file=sys.stderr)
    return 1 if report is not None and report.failed else 0
