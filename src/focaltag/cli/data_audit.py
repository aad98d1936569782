"""``focaltag data audit``: duplicate tracks, cross-split leakage, missing files and untagged tracks of a split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command
from focaltag.cli.data_options import add_dataset_options, open_dataset_from_args


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "audit", func=run,
                    help="find duplicate tracks, train/validation/test leakage, missing files, untagged tracks",
                    description="Audit an official split: byte-identical tracks (from a tracks manifest's "
                    "SHA-256 or by hashing the audio), duplicate groups that cross train/validation/test, "
                    "tracks missing on disk and tracks with no tag of the vocabulary.")
    add_dataset_options(p, part=False)
    p.add_argument("--split-dir", default=None, type=Path, metavar="DIR",
                   help="instead of --dataset-dir: a folder with <dataset>-{train,validation,test}.tsv (a split-N "
                   "folder, or the folder holding splits/split-N)")
    p.add_argument("--dataset", default="autotagging_moodtheme", help="with --split-dir: file name prefix of the "
                   "split files")
    p.add_argument("--manifest", type=Path, default=None, metavar="SHA256_TRACKS.txt",
                   help="official tracks manifest ('SHA256 NN/ID.low.mp3' lines); default with --dataset-dir: "
                   "DIR/download/autotagging_moodtheme_audio-low_sha256_tracks.txt when it is there")
    p.add_argument("--audio-dir", type=Path, default=None, metavar="DIR",
                   help="audio folder: report missing files and hash tracks the manifest does not cover; default "
                   "with --dataset-dir: the dataset's audio folder when it exists")
    p.add_argument("--category", default=None, metavar="PREFIX",
                   help="vocabulary = train tags under this prefix; unset: every train tag")
    p.add_argument("--workers", type=int, default=4, help="threads for hashing audio files")
    p.add_argument("--fail-on-issues", action="store_true",
                   help="exit 1 when duplicates, leakage, missing files or untagged tracks are found")
    p.add_argument("--show", type=int, default=10, metavar="N", help="duplicate groups listed in the text output")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _text(r: dict[str, Any], show: int) -> str:
    n = r["n_tracks"]
    lines = [f"tracks: {sum(n.values()):,} ({', '.join(f'{k} {v:,}' for k, v in n.items())}), "
             f"vocabulary {r['n_tags']} tags",
             f"hashed: {r['n_hashed']:,} (source: {r['hash_source']}); not hashed: {r['n_unhashed']:,}",
             f"duplicate groups: {r['duplicate_groups']} involving {r['duplicate_tracks']} tracks "
             f"({r['redundant_tracks']} redundant copies)",
             f"cross-split groups (leakage): {r['cross_split_groups']} involving {r['cross_split_tracks']} tracks"]
    shown = r["cross_split"] + [g for g in r["duplicates"] if not g["cross_split"]]
    for g in shown[:show]:
        members = ", ".join(f"{m['track_id']} ({m['subset']})" for m in g["tracks"])
        lines.append(f"  {'LEAK ' if g['cross_split'] else ''}{g['sha256'][:12]}: {members}")
    if len(shown) > show:
        lines.append(f"  ... {len(shown) - show} more (use --json for all)")
    if r["track_ids_in_several_subsets"]:
        lines.append(f"track ids in several subsets: {len(r['track_ids_in_several_subsets'])}")
    if r.get("n_artists") is not None:
        shared = r["artists_in_several_subsets"]
        lines.append(f"artists in several subsets: {len(shared)} of {r['n_artists']}")
        lines += [f"  {a}: {', '.join(subs)}" for a, subs in list(shared.items())[:show]]
    if r["n_missing_files"] is None:
        lines.append("missing files: not checked (pass --audio-dir)")
    else:
        lines.append(f"missing files: {r['n_missing_files']}")
        lines += [f"  {m['track_id']} ({m['subset']}): {m['path']}" for m in r["missing_files"][:show]]
    lines.append(f"tracks with no tag of the vocabulary: {r['n_untagged']}")
    lines += [f"  {m['track_id']} ({m['subset']})" for m in r["untagged"][:show]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from focaltag.data.audit import audit_split
    from focaltag.data.metadata import TagVocabulary, read_tracks, split_files
    from focaltag.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.dataset_dir is not None:
        if args.split_dir is not None:
            raise ConfigError("give --dataset-dir DIR or --split-dir DIR, not both")
        report = _audit_dataset(args)
    else:
        if args.split_dir is None:
            raise ConfigError("give --dataset-dir DIR (with --tagset, --split) or --split-dir DIR")
        if args.tagset is not None:
            raise ConfigError("--tagset chooses the split files of --dataset-dir; with --split-dir use --dataset")
        split = 0 if args.split is None else args.split
        vocab = None
        if args.category:
            train = read_tracks(split_files(args.split_dir, split, args.dataset)["train"], allow_untagged=True)
            vocab = TagVocabulary.from_tracks(train, category=args.category)
        report = audit_split(args.split_dir, manifest=args.manifest, audio_dir=args.audio_dir, split=split,
                             dataset=args.dataset, vocab=vocab, workers=args.workers)
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(_text(report, args.show))
    issues = (report["duplicate_groups"] or report["n_missing_files"] or report["n_untagged"]
              or report["track_ids_in_several_subsets"] or report["artists_in_several_subsets"])
    return 1 if args.fail_on_issues and issues else 0


def _audit_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Audit the three parts of --dataset-dir (MTG layout of a tag set and split, or a tracks.csv)."""
    from focaltag.data.audit import audit_dataset
    from focaltag.data.dataset import DEFAULT_TAGSET

    ds = open_dataset_from_args(args)
    manifest = args.manifest
    if manifest is None and ds.kind == "mtg":
        default = ds.root / "download" / f"autotagging_{DEFAULT_TAGSET}_audio-low_sha256_tracks.txt"
        manifest = default if default.is_file() else None
    if args.category:
        ds.tag_category = args.category
    return audit_dataset(ds, manifest=manifest, audio_dir=args.audio_dir, workers=args.workers)
