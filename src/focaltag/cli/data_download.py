"""``focaltag data download``: resumable, SHA-256-verified download of the official MTG-Jamendo archives."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command

DEFAULT_MANIFEST_DIR = Path("mtg-jamendo-dataset") / "data" / "download"


def register(subparsers: Any) -> None:
    from focaltag.data.download import DATA_TYPES, DEFAULT_BASE_URL

    p = add_command(subparsers, "download", func=run,
                    help="download, verify and unpack the official MTG-Jamendo archives (resumable)",
                    description="Download the official MTG-Jamendo tar archives listed in the official "
                    "manifests, resume interrupted transfers (HTTP Range), check every archive and track "
                    "against its SHA-256, and unpack them safely. Rerunning fetches only what is missing. "
                    "The manifests come with the official repository: git clone "
                    "https://github.com/MTG/mtg-jamendo-dataset (they are in data/download/).")
    p.add_argument("--dataset", default="autotagging_moodtheme",
                   help="dataset name as in the manifests (autotagging_moodtheme, raw_30s)")
    p.add_argument("--type", dest="data_type", default="audio-low", choices=DATA_TYPES,
                   help="audio (320 kbps MP3), audio-low (low-quality MP3) or melspecs")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (the audio root)")
    p.add_argument("--manifest-dir", type=Path, default=DEFAULT_MANIFEST_DIR, metavar="DIR",
                   help="folder with <dataset>_<type>_sha256_tars.txt (and _sha256_tracks.txt): data/download "
                   "of a clone of github.com/MTG/mtg-jamendo-dataset")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help="mirror root; archives are fetched from <base-url>/<dataset>/<type>/<archive>")
    p.add_argument("--only", nargs="+", default=None, metavar="NN",
                   help="fetch only these archives (numbers like 00 07, or full archive names)")
    p.add_argument("--no-unpack", dest="unpack", action="store_false", help="only download and verify the tars (unpack=%(default)s means archives are unpacked)")
    p.add_argument("--keep-tars", action="store_true", help="keep each archive after a verified extraction")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be fetched and the total size (from HEAD requests); change nothing")
    p.add_argument("--retries", type=int, default=3, help="extra attempts per archive after a failure")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry; doubles on each further retry")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a connection is dropped")
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


def run(args: argparse.Namespace) -> int:
    from focaltag.data.download import download_dataset
    from focaltag.errors import ConfigError

    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise ConfigError(f"--retries and --backoff must be >= 0 and --timeout > 0; got {args.retries}, "
                          f"{args.backoff}, {args.timeout}")
    if args.keep_tars and not args.unpack:
        raise ConfigError("--keep-tars has no effect with --no-unpack (the tars are always kept then)")
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # retry/failure messages print above the progress bars, not into them
        report = download_dataset(args.out, dataset=args.dataset, data_type=args.data_type,
                                  manifest_dir=args.manifest_dir, base_url=args.base_url, unpack=args.unpack,
                                  keep_tars=args.keep_tars, dry_run=args.dry_run, only=args.only,
                                  retries=args.retries, backoff=args.backoff, timeout=args.timeout)
    result = report.to_dict()
    if args.dry_run:
        result["free_bytes"] = _free_bytes(args.out)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    elif args.dry_run:
        todo = [p for p in report.plan if not p["action"].startswith("skip")]
        for p in todo:
            extra = f"  [{p['problem']}]" if p.get("problem") else ""
            print(f"{p['action']:<28} {p['archive']}  {_size(p.get('size')) if 'size' in p else ''}{extra}")
        print(f"{len(todo)} of {len(report.plan)} archives to process, {len(report.skipped)} already done; "
              f"total to download: {_size(report.total_bytes)}; free space: {_size(result['free_bytes'])}")
    else:
        print(f"fetched {len(report.fetched)}, unpacked {len(report.unpacked)}, already done "
              f"{len(report.skipped)}, failed {len(report.failed)}; {_size(report.bytes_downloaded)} downloaded, "
              f"{report.tracks_verified} tracks verified")
        if report.tracks_missing:
            print(f"warning: {report.tracks_missing} track(s) of the tracks manifest were in no archive",
                  file=sys.stderr)
        if report.failed:  # each failure was already logged with its reason
            print(f"{len(report.failed)} archive(s) failed: {', '.join(report.failed)}; rerun the same command to "
                  "retry them (finished archives and partial downloads are kept)", file=sys.stderr)
    return 1 if report.failed else 0
