"""``focaltag data synth``: write the SYNTHETIC demo dataset in the MTG-Jamendo layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "synth", func=run,
                    help="write a SYNTHETIC demo dataset (real tag names and imbalance, generated audio) "
                         "in the exact MTG-Jamendo layout")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (audio/, splits/split-0/ ... split-4/)")
    p.add_argument("--tracks", type=int, default=300, help="number of tracks (>= 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    p.add_argument("--min-duration", type=float, default=20.0, help="shortest track in seconds")
    p.add_argument("--max-duration", type=float, default=60.0, help="longest track in seconds")
    p.add_argument("--workers", type=int, default=None, help="encoder processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from focaltag.data.synth import SYNTHETIC_NOTICE, synthesize_dataset

    log.info("%s", SYNTHETIC_NOTICE)
    s = synthesize_dataset(args.out, n_tracks=args.tracks, seed=args.seed, min_duration=args.min_duration,
                           max_duration=args.max_duration, workers=args.workers)
    log.info("SYNTHETIC dataset in %s: %s tracks (train %d / validation %d / test %d), %d tags, "
             "imbalance factor %.1f, %.1f min of audio (%d files written now)",
             s.out_dir, sum(s.n_tracks.values()), s.n_tracks["train"], s.n_tracks["validation"],
             s.n_tracks["test"], s.n_tags, s.imbalance_factor, s.seconds / 60, s.created)
    print(s.out_dir)
    return 0
