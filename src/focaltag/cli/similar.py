"""``focaltag similar``: the tracks of a library most like one or more seeds (thin layer over ``focaltag.Library``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command

__all__ = ["register", "add_library_argument", "split_tags"]


def add_library_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", type=Path, required=True, metavar="TAGS.jsonl",
                   help="a library run: 'focaltag tag DIR -o TAGS.jsonl --embeddings'")
    p.add_argument("-m", "--model", default=None, metavar="M",
                   help="the model the library's embeddings must come from (refused when they do not); it also "
                   "tags seeds that are not in the library (default: the library's own model)")
    p.add_argument("--device", default="cpu", help="torch device for tagging seeds that are not in the library")


def split_tags(values: list[str] | None) -> list[str]:
    """``--where calm,relaxing --where dark`` -> ``[calm, relaxing, dark]``."""
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "similar", func=run_similar, help="tracks of a library most like a seed",
                    description="The tracks of a library run most similar to the seeds (cosine similarity of "
                    "their embeddings; several seeds: their mean). Seeds and duplicates of a seed (the same audio "
                    "under another path) are left out. A seed may be a library track or any audio file, which is "
                    "then tagged with the library's model.")
    p.add_argument("seeds", nargs="+", metavar="SEED", help="audio files (library tracks or any other)")
    add_library_argument(p)
    p.add_argument("-n", type=int, default=25, metavar="N", help="tracks to list")
    p.add_argument("--format", choices=("table", "json", "m3u"), default="table",
                   help="table: score and file; json: a list of {file, score} best first (score: cosine "
                   "similarity); m3u: an extended M3U playlist on stdout")
    p.add_argument("--where", action="append", metavar="TAG[,TAG]",
                   help="keep only tracks that have all these tags (their yes decisions, or their top tags for "
                   "a model without thresholds); repeatable")
    p.add_argument("--spread", type=int, default=None, metavar="N",
                   help="at most N tracks per artist (or album, --spread-by), read from the files' tags")
    p.add_argument("--spread-by", choices=("artist", "album"), default="artist", help="what --spread limits")
    p.add_argument("--absolute", action="store_true", help="with --format m3u: absolute paths (default: relative "
                   "to the current folder)")


def run_similar(args: argparse.Namespace) -> int:
    from focaltag._paths import escape_path
    from focaltag.errors import ConfigError
    from focaltag.library.api import Library

    if args.n < 1:
        raise ConfigError(f"similar: -n must be >= 1, got {args.n}")
    if args.absolute and args.format != "m3u":
        raise ConfigError("--absolute applies to --format m3u only")
    library = Library(args.library, model=args.model, device=args.device)
    matches = library.similar(*args.seeds, n=args.n, where=split_tags(args.where), spread=args.spread,
                              spread_by=args.spread_by)
    if args.format == "json":
        json.dump([{"file": m.file, "score": round(m.score, 6)} for m in matches], sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "m3u":
        from focaltag.library.m3u import m3u_text
        from focaltag.library.playlist import Entry

        entries = [Entry(library.locate(m.file), float(library.index.durations[m.row]), m.score) for m in matches]
        sys.stdout.write(m3u_text(entries, Path.cwd(), absolute=args.absolute, info=library.file_info)
                         .encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    else:
        for m in matches:
            print(f"{m.score:.3f}  {escape_path(m.file)}")
    if not matches:
        print("focaltag: no other track in the library has an embedding", file=sys.stderr)
    return 0
