"""``focaltag demo``: the whole pipeline end to end on the built-in SYNTHETIC dataset."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command
from focaltag.training.loss_registry import PAPER_LOSSES

log = logging.getLogger(__name__)

ENSEMBLE_MEMBERS = PAPER_LOSSES  # the paper averages its four losses


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "demo", func=run,
                    help="run the whole pipeline on the built-in SYNTHETIC dataset: synthesize, stats, prepare, "
                         "train the four losses, ensemble, Tables I-IV, tag a file")
    p.add_argument("--out", type=Path, default=Path("focaltag-demo"), help="folder for data, runs and report")
    p.add_argument("--quick", action="store_true",
                   help="the four losses and their ensemble only, fewer tracks and epochs (~2 minutes)")


def _step(n: int, text: str) -> None:
    log.info("\n[%d/5] %s", n, text)


def run(args: argparse.Namespace) -> int:
    from focaltag.data.metadata import read_tracks, split_files
    from focaltag.data.stats import dataset_stats, plot_tag_distribution
    from focaltag.data.synth import SYNTHETIC_NOTICE, synthesize_dataset
    from focaltag.experiments.runner import PAPER_EXPERIMENT, run_experiment
    from focaltag.experiments.spec import load_experiment, resolve_experiment

    started = time.time()
    out: Path = args.out
    preset = "demo-quick" if args.quick else "demo"
    log.info("focaltag demo (%s preset) -> %s\n%s", preset, out, SYNTHETIC_NOTICE)
    spec = load_experiment(PAPER_EXPERIMENT)
    synth = resolve_experiment(spec, preset=preset).synth
    if synth is None:
        from focaltag.errors import ConfigError

        raise ConfigError(f"{PAPER_EXPERIMENT}: preset {preset!r} has no synth section; the demo needs one")

    _step(1, f"synthesizing the demo dataset ({synth.n_tracks} SYNTHETIC tracks, MTG-Jamendo layout)")
    data_dir = out / "data"
    s = synthesize_dataset(data_dir, n_tracks=synth.n_tracks, seed=synth.seed, min_duration=synth.min_duration,
                           max_duration=synth.max_duration)
    log.info("  %s: train %d / validation %d / test %d tracks, %d tags", data_dir, s.n_tracks["train"],
             s.n_tracks["validation"], s.n_tracks["test"], s.n_tags)

    _step(2, "dataset statistics (focaltag data stats)")
    files = split_files(data_dir)
    train = read_tracks(files["train"])
    stats = dataset_stats(train)
    plot_path = plot_tag_distribution(stats, out / "tag-distribution.png",
                                      title="SYNTHETIC demo data: training tag distribution")
    log.info("  %d training tracks, %d tags, imbalance factor %.1f; plot: %s", stats["n_tracks"],
             stats["n_tags"], stats["imbalance_factor"], plot_path)

    _step(3, "prepare cache, train every run of the grid, predict, ensemble, evaluate (focaltag experiment)")
    result = run_experiment(spec, out, preset=preset)
    if result.failed:
        for line in result.failed:
            log.error("  failed: %s", line)

    _step(4, "tag one synthetic test track with the four-loss ensemble (focaltag tag)")
    tagged = _tag_one(out, data_dir, files["test"])

    _step(5, "summary")
    print(result.report_text.split("\n## ", 2)[1].join(["## ", ""]) if "\n## " in result.report_text
          else result.report_text)
    print(f"\nfocaltag demo finished in {time.time() - started:.0f} s on SYNTHETIC data:")
    print(f"  report          {result.report_path}")
    print(f"  results (JSON)  {out / 'results.json'}")
    print(f"  runs            {out / 'split-0' / 'runs'}  (best.pt, metrics.jsonl, tensorboard/)")
    print(f"  tag plot        {plot_path}")
    if tagged:
        print(f"  tagged          {tagged}")
    print("  next            focaltag tag song.mp3 --model " + str(out / "split-0" / "runs" / "focal"))
    return 1 if result.failed else 0


def _tag_one(out: Path, data_dir: Path, test_tsv: Path) -> str | None:
    from focaltag.data.metadata import read_tracks
    from focaltag.data.tags import short_tag
    from focaltag.inference import Tagger
    from focaltag.models import load_model

    runs = out / "split-0" / "runs"
    members = [runs / n for n in ENSEMBLE_MEMBERS if (runs / n / "best.pt").is_file()]
    if not members:
        log.warning("  no trained run to tag with")
        return None
    track = read_tracks(test_tsv)[0]
    audio = data_dir / "audio" / track.path
    tagger = Tagger([load_model(m) for m in members])
    res = tagger.tag(audio)
    top = ", ".join(f"{short_tag(t)} {p:.2f}" for t, p in res.top[:5])
    log.info("  %s (%.1f s), ensemble of %d models\n  top-5: %s\n  true tags: %s", audio, res.duration,
             len(members), top, ", ".join(short_tag(t) for t in track.tags))
    return str(audio)
