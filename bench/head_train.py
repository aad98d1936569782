"""Benchmark: training a head on 1,000 tracks whose embeddings are stored (``focaltag head train --library``
once the vectors are read): cross-validation with head-size selection, the BCE comparison on the same folds,
bootstrap intervals, thresholds, and the final head on all tracks.

The embeddings are generated (their values do not change the work): 1,000 tracks, 12 tags from 5 to 300 positives,
at the widths of the shipped bases: 200 (Won et al.'s Musicnn) and 1,024 (usc-sail-2020, four 256-value
members). The options are ``head train``'s defaults (focal loss, 5 folds, linear vs one hidden layer of 256,
400 steps of 64 tracks, 1,000 resamples). Each width runs ``--repeats`` interleaved rounds (``bench/_protocol.py``);
the figures are the median [min-max] wall and process CPU seconds. Writes
``bench/results/<date>_head-train_<cpu kind>.json`` and prints it; the issue's target is under 30 s on 2 cores.

    .venv/bin/python bench/head_train.py [--tracks 1000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

from _protocol import Run, add_protocol_arguments, cpus, interleave, summary, walls

WIDTHS = {"musicnn-200": 200, "usc-sail-2020-1024": 1024}


def stored_embeddings(n_tracks: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embeddings with some signal per tag and an imbalanced multi-label profile (5 to 300 positives)."""
    rng = np.random.default_rng(seed)
    counts = np.geomspace(300, 5, 12).astype(int)
    y = np.zeros((n_tracks, len(counts)), dtype=np.int8)
    for j, c in enumerate(counts):
        y[rng.choice(n_tracks, c, replace=False), j] = 1
    x = (y @ rng.normal(size=(len(counts), dim)) + rng.normal(size=(n_tracks, dim)) * 3).astype(np.float32)
    return x, y, [f"tag{j:02d}" for j in range(len(counts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000)
    add_protocol_arguments(parser, quick="the 200-value width only")
    args = parser.parse_args()
    run = Run("bench/head_train.py", args, name="head-train")

    from focaltag.library.heads import cross_validate_head
    from focaltag.training.head import HeadOptions, fit_head

    options = HeadOptions()
    widths = {"musicnn-200": 200} if args.quick else WIDTHS
    data = {name: stored_embeddings(args.tracks, dim) for name, dim in widths.items()}

    def train(name: str) -> float:
        x, y, tags = data[name]
        report = cross_validate_head(x, y, tags, options)
        fit_head(x, y, hidden_dim=report.hidden_dim, options=options)
        return float(report.metrics["PR-AUC-macro"])

    times = interleave({name: (lambda n=name: train(n)) for name in widths}, args.repeats)
    results = {"tracks": args.tracks, "tags": 12, "options": {"loss": options.loss, "folds": options.folds,
                                                               "hidden_sizes": list(options.hidden_sizes),
                                                               "steps": options.steps, "bootstrap": 1000}}
    for name, timings in times.items():
        results[name] = {"wall_s": summary(walls(timings)), "cpu_s": summary(cpus(timings)),
                         "oof_pr_auc_macro": timings[0].value}
    run.finish(results)


if __name__ == "__main__":
    main()
