"""``focaltag data stats``: tag counts, imbalance, head/middle/tail groups, co-occurrence, and a Fig. 1-style plot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command
from focaltag.cli.data_options import add_dataset_options, open_dataset_from_args
from focaltag.data.groups import HEAD_ABOVE, TAIL_AT_MOST, middle_range
from focaltag.data.tags import short_tag


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "stats", func=run,
                    help="statistics of a dataset part or metadata files (counts, imbalance, groups, co-occurrence)",
                    description="Statistics of the tracks of one part of a dataset (--dataset-dir DIR --tagset T "
                    "--split N --part P; the vocabulary is the tag set's) or of metadata files (official TSV, "
                    "the authors' list format or path,tags CSV). Several sources are counted together, the "
                    "first one fixes the tag vocabulary and the plot order (paper Fig. 1 / Fig. 2).")
    add_dataset_options(p)
    p.add_argument("--tsv", action="append", default=None, type=Path, metavar="FILE",
                   help="metadata file; repeat to add extra training lists (drawn stacked in the plot); "
                   "with --dataset-dir they are added to its part")
    p.add_argument("--label", action="append", default=None, metavar="NAME",
                   help="legend name per --tsv; unset: the file names")
    p.add_argument("--category", default=None, metavar="PREFIX",
                   help="count only tags under this category prefix, e.g. mood/theme, genre, instrument")
    p.add_argument("--tag-list", type=Path, default=None, metavar="FILE",
                   help="count only the tags listed in FILE (one per line)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="number of co-occurring tag pairs shown")
    p.add_argument("--head-above", type=int, default=HEAD_ABOVE, help="head tags have more tracks than this")
    p.add_argument("--tail-at-most", type=int, default=TAIL_AT_MOST,
                   help="tail tags have at most this many tracks")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write the tag-distribution plot")
    p.add_argument("--title", default=None, help="plot title")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Read the files and compute the statistics dict (shared by the text and JSON outputs)."""
    from focaltag.data.metadata import TagVocabulary, merge_track_lists, read_tag_list, read_tracks
    from focaltag.data.stats import dataset_stats
    from focaltag.errors import ConfigError

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    tsvs = list(args.tsv or [])
    if args.dataset_dir is None:
        if not tsvs:
            raise ConfigError("give --dataset-dir DIR (with --tagset, --split, --part) or --tsv FILE")
        if args.tagset is not None or args.split is not None:
            raise ConfigError("--tagset and --split choose a file of --dataset-dir; give --dataset-dir DIR")
    names = [str(f) for f in tsvs]
    lists = [read_tracks(f) for f in tsvs]
    vocab = None
    if args.dataset_dir is not None:
        ds = open_dataset_from_args(args)
        lists.insert(0, ds.tracks(args.part))
        names.insert(0, str(ds.part_file(args.part)) if ds.kind == "mtg" else f"{ds.label} ({args.part})")
        vocab = ds.vocabulary()
    labels = args.label or [Path(n).name for n in names]
    if len(labels) != len(names):
        raise ConfigError(f"--label was given {len(labels)} times for {len(names)} sources; "
                          "give one label per source or none")
    if args.tag_list is not None:
        vocab = TagVocabulary(read_tag_list(args.tag_list))
    elif vocab is None:
        vocab = TagVocabulary.from_tracks(lists[0])
    if args.category:
        vocab = vocab.subset(args.category)
    tracks = merge_track_lists(*lists, names=names)
    sources = dict(zip(labels, lists, strict=True)) if len(lists) > 1 else None
    stats = dataset_stats(tracks, vocab, group_thresholds=(args.head_above, args.tail_at_most), top=args.top,
                          sources=sources)
    stats["files"] = names
    if args.dataset_dir is not None:
        stats["dataset"] = {"root": str(ds.root), "kind": ds.kind, "tagset": ds.tagset, "split": ds.split,
                            "part": args.part}
    return stats


def _text(stats: dict[str, Any]) -> str:
    lines = [f"files: {', '.join(stats['files'])}",
             f"tracks: {stats['n_tracks']:,}   tags: {stats['n_tags']}   untagged: {stats['n_untagged']}"]
    tpt = stats["tags_per_track"]
    lines.append(f"tags per track: mean {tpt['mean']:.2f}, median {tpt['median']:g}, "
                 f"min {tpt['min']:g}, max {tpt['max']:g}")
    dur = stats["duration"]
    if dur:
        lines.append(f"duration (s): mean {dur['mean']:.1f}, median {dur['median']:.1f}, min {dur['min']:.1f}, "
                     f"max {dur['max']:.1f}, total {dur['total_hours']:.1f} h")
    most, least = stats["most_frequent"], stats["least_frequent"]
    imb = stats["imbalance_factor"]
    lines.append(f"imbalance factor: {imb:.1f}" if imb is not None else "imbalance factor: undefined")
    lines[-1] += (f" (most {short_tag(most['tag'])} {most['count']:,} / "
                  f"least {short_tag(least['tag'])} {least['count']:,})")
    th = stats["group_thresholds"]
    for name in ("head", "middle", "tail"):
        tags = stats["groups"][name]
        rule = {"head": f"> {th['head_above']}", "middle": middle_range(th["head_above"], th["tail_at_most"]),
                "tail": f"<= {th['tail_at_most']}"}[name]
        lines.append(f"{name} ({rule}): {len(tags)} tags: {', '.join(short_tag(t) for t in tags)}")
    lines.append("tag counts:")
    items = list(stats["tag_counts"].items())
    for i in range(0, len(items), 4):
        lines.append("  " + "".join(f"{short_tag(t):<16}{c:>6}    " for t, c in items[i:i + 4]).rstrip())
    lines.append("most co-occurring pairs (count, Pearson r):")
    for p in stats["top_cooccurrence"]:
        r = "n/a" if p["correlation"] is None else f"{p['correlation']:.3f}"
        lines.append(f"  {short_tag(p['tags'][0])} + {short_tag(p['tags'][1])}: {p['count']}, r = {r}")
    lines.append("most correlated pairs (Pearson r, count):")
    for p in stats["top_correlation"]:
        r = "n/a" if p["correlation"] is None else f"{p['correlation']:.3f}"
        lines.append(f"  {short_tag(p['tags'][0])} + {short_tag(p['tags'][1])}: r = {r}, {p['count']}")
    if stats["ignored_tags"]:
        lines.append(f"ignored (outside the vocabulary): {', '.join(stats['ignored_tags'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from focaltag.data.stats import plot_tag_distribution

    stats = compute(args)
    if args.plot is not None:
        plot_tag_distribution(stats, args.plot, title=args.title)
        stats["plot"] = str(args.plot)
    if args.json:
        json.dump(stats, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(_text(stats))
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0
