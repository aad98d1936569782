"""``focaltag playlist``: an M3U8 playlist from a library run, by mood, as a radio or as a path (thin layer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command
from focaltag.cli.similar import add_library_argument, split_tags

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "playlist", func=run_playlist, help="write an M3U8 playlist from a library",
                    description="Write an extended M3U playlist (UTF-8, #EXTINF with length and 'artist - title' "
                    "from the files' tags, paths relative to the playlist's folder) from a library run, in one of "
                    "three modes: --tag (mood: the tracks that have every tag, by probability), --like (radio: the "
                    "seed, then similar tracks with variety) or --from/--to (a glide from one track to another).")
    add_library_argument(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="NAME.m3u8", help="playlist to write")
    mode = p.add_argument_group("mode (exactly one)")
    mode.add_argument("--tag", action="append", metavar="TAG",
                      help="mood: tracks with all these tags (repeatable, or comma-separated)")
    mode.add_argument("--like", metavar="SONG", help="radio: start from SONG (a library track or any audio file)")
    mode.add_argument("--from", dest="start", metavar="A", help="path: from track A ...")
    mode.add_argument("--to", dest="end", metavar="B", help="... to track B")
    p.add_argument("-n", type=int, default=None, metavar="N", help="tracks in the playlist (default: 25; 12 for "
                   "--from/--to, both ends included)")
    p.add_argument("--spread", type=int, default=None, metavar="N",
                   help="with --like: at most N tracks per artist (or album, --spread-by)")
    p.add_argument("--spread-by", choices=("artist", "album"), default="artist", help="what --spread limits")
    p.add_argument("--absolute", action="store_true", help="absolute paths instead of paths relative to the "
                   "playlist's folder")


def run_playlist(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError
    from focaltag.library.api import Library

    if (args.start is None) != (args.end is None):
        raise ConfigError("playlist: a path needs both --from A and --to B")
    if args.spread is not None and args.like is None:
        raise ConfigError("--spread applies to --like (radio) playlists")
    n = args.n if args.n is not None else (12 if args.start is not None else 25)
    if args.output.suffix.lower() not in (".m3u8", ".m3u"):
        raise ConfigError(f"-o {args.output}: give a playlist name ending in .m3u8")
    library = Library(args.library, model=args.model, device=args.device)
    glide = (args.start, args.end) if args.start is not None else None
    entries = library.playlist(tags=split_tags(args.tag), like=args.like, glide=glide, n=n, spread=args.spread,
                               spread_by=args.spread_by)
    path = library.write_playlist(entries, args.output, absolute=args.absolute)
    short = f" (the library has only {len(entries)} that fit)" if len(entries) < n else ""
    print(f"focaltag: wrote {path}: {len(entries)} track(s){short}", file=sys.stderr)
    return 0
