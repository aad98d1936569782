"""``focaltag data prepare``: decode the tracks of one or more split TSVs into the training waveform cache."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, parse_shard
from focaltag.cli.data_options import add_dataset_options, open_dataset_from_args

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "prepare", func=run,
        help="decode listed tracks once into a 16 kHz float16 cache for training (resumable, parallel)",
        description="Decode every track listed in the TSVs to 16 kHz mono float16 in CACHE. A killed run "
                    "continues where it stopped when rerun; undecodable files are listed in "
                    "CACHE/failures.tsv and the rest completes (exit code 1 then).",
    )
    add_dataset_options(parser, part=False, parts=True)
    parser.add_argument("--tsv", action="append", default=None, type=Path, metavar="SPLIT.tsv",
                        help="metadata file listing the tracks (repeat for several splits); instead of, or beside, "
                             "--dataset-dir")
    parser.add_argument("--audio-dir", default=None, type=Path, metavar="DIR",
                        help="folder the PATH column is relative to; default: the dataset's (DIR/audio, or DIR for a "
                             "tracks.csv)")
    parser.add_argument("--cache", default=None, type=Path, metavar="DIR",
                        help="cache folder (created, or continued); default: DIR/cache of --dataset-dir (where "
                             "training looks when data.cache_dir is null)")
    parser.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                        help="decoding processes; default: one per CPU core")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="only do shard I of N (0-based; for cluster array jobs, each given the same TSVs); "
                             "default: all tracks")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="decode in Ray actors across a cluster, one per CPU (the same cache, track for track); "
                             "joins ADDRESS (HOST:PORT), "
                             "else RAY_ADDRESS, else starts Ray on this machine; the audio and the cache must be on "
                             "a file system every node sees at the same path (requires pip install 'focaltag[ray]')")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a positive integer, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from focaltag.audio.cache import prepare_cache
    from focaltag.data.metadata import SUBSETS, read_tracks
    from focaltag.errors import ConfigError

    tracks = []
    audio_dir, cache = args.audio_dir, args.cache
    if args.dataset_dir is not None:
        ds = open_dataset_from_args(args)
        tracks += [rec for part in (args.parts or SUBSETS) for rec in ds.tracks(part)]
        audio_dir = audio_dir or ds.audio_dir
        cache = cache or ds.root / "cache"
    elif args.tagset is not None or args.split is not None or args.parts:
        raise ConfigError("--tagset, --split and --part choose tracks of --dataset-dir; give --dataset-dir DIR")
    tracks += [rec for tsv in args.tsv or [] for rec in read_tracks(tsv, allow_untagged=True)]
    if args.dataset_dir is None and not args.tsv:
        raise ConfigError("give --dataset-dir DIR (optionally --tagset, --split, --part) or --tsv FILE")
    if audio_dir is None or cache is None:
        raise ConfigError("--tsv needs --audio-dir DIR and --cache DIR (or give --dataset-dir DIR)")
    runner, started, workers = None, False, args.workers
    if args.ray is not None:
        from focaltag.ray import connect, ray_batch_runner

        runner = ray_batch_runner()
        started = connect(args.ray or None)
    try:
        if runner is not None:
            runner.start()  # the actors' start-up overlaps the planning in prepare_cache
            if workers is None:
                import ray

                workers = int(ray.cluster_resources().get("CPU", 1))
        summary = prepare_cache(tracks, audio_dir, cache, workers=workers, shard=args.shard or (0, 1),
                                progress=not args.quiet, runner=runner)
    finally:
        if runner is not None:
            runner.close()
        if started:
            import ray

            ray.shutdown()
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        shard = "" if summary.shard[1] == 1 else f" (shard {summary.shard[0]}/{summary.shard[1]})"
        print(f"cache {summary.cache_dir}{shard}: {summary.tracks} tracks, {summary.prepared} decoded now, "
              f"{summary.skipped} already cached, {summary.failed} failed; {summary.hours:.2f} h of audio, "
              f"{summary.bytes / 1e9:.3f} GB on disk, {summary.seconds:.1f} s")
        if summary.failed:
            print(f"failures ({summary.failed}) listed in {summary.failures_file}")
    return 1 if summary.failed else 0
