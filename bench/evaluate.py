"""Benchmark: ``evaluate(..., bootstrap=1000)`` on a 4,231 x 56 matrix (the split-0 test size) against the
naive baseline that calls scikit-learn once per resample in a Python loop.

The baseline is timed on a subset of resamples and extrapolated linearly to the full count (it would take
minutes); both use the same resample indices, and the JSON reports the largest difference between their
per-resample macro values. Prints one JSON object.

    /work/venv/bin/python bench/evaluate.py [--resamples 1000] [--baseline-resamples 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def synthetic_matrices(n_tracks: int = 4231, n_tags: int = 56, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Long-tailed 0/1 labels (the real mood/theme prevalences) and float32 scores that carry some signal."""
    from focaltag.data.tags import MOODTHEME_TRAIN_COUNTS

    rng = np.random.default_rng(seed)
    counts = np.array(sorted(MOODTHEME_TRAIN_COUNTS.values()), dtype=np.float64)
    prevalence = np.resize(counts / 9949.0, n_tags)
    y = (rng.random((n_tracks, n_tags)) < prevalence).astype(np.int64)
    logits = rng.normal(size=(n_tracks, n_tags)) + 1.2 * y - 2.5
    return y, (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def naive_replicates(y: np.ndarray, s: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro PR-AUC / ROC-AUC per resample with sklearn, one call pair per resample (the baseline)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    ap = np.empty(len(indices))
    auc = np.empty(len(indices))
    for b, idx in enumerate(indices):
        ap[b] = average_precision_score(y[idx], s[idx], average="macro")
        auc[b] = roc_auc_score(y[idx], s[idx], average="macro")
    return ap, auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--baseline-resamples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from focaltag.evaluation import evaluate
    from focaltag.evaluation.bootstrap import bootstrap_macro, resample_indices
    from focaltag.evaluation.metrics import per_tag_scores

    y, s = synthetic_matrices()
    per_tag_scores(y[:100], s[:100])  # import sklearn outside the timed region

    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate(y, s, bootstrap=args.resamples, seed=args.seed)
    ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0

    # baseline: full-data metrics once + sklearn per resample on a subset, extrapolated to all resamples
    t0, c0 = time.perf_counter(), time.process_time()
    per_tag_scores(y, s)
    full_once, full_once_cpu = time.perf_counter() - t0, time.process_time() - c0
    indices = resample_indices(y.shape[0], args.resamples, seed=args.seed)[: args.baseline_resamples]
    t0, c0 = time.perf_counter(), time.process_time()
    naive_ap, naive_auc = naive_replicates(y, s, indices)
    subset, subset_cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = args.resamples / args.baseline_resamples
    baseline = full_once + subset * scale
    baseline_cpu = full_once_cpu + subset_cpu * scale

    reps, _ = bootstrap_macro(y, s, n_resamples=args.resamples, seed=args.seed)
    n = args.baseline_resamples
    max_diff = max(float(np.max(np.abs(reps["PR-AUC-macro"][:n] - naive_ap))),
                   float(np.max(np.abs(reps["ROC-AUC-macro"][:n] - naive_auc))))
    print(json.dumps({
        "benchmark": "focaltag.evaluate with bootstrap",
        "matrix": list(y.shape),
        "resamples": args.resamples,
        "focaltag_seconds": round(ours, 3),
        "baseline": "sklearn average_precision_score + roc_auc_score (macro) per resample in a Python loop",
        "baseline_seconds_extrapolated": round(baseline, 3),
        "baseline_measured_resamples": n,
        "baseline_measured_seconds": round(subset + full_once, 3),
        "baseline_extrapolation": f"linear: {n} resamples timed, scaled to {args.resamples}",
        "speedup": round(baseline / ours, 1),
        "focaltag_cpu_seconds": round(ours_cpu, 3),
        "baseline_cpu_seconds_extrapolated": round(baseline_cpu, 3),
        "speedup_cpu": round(baseline_cpu / ours_cpu, 1),
        "note": "wall times depend on machine load; CPU times (process_time) are the load-independent view",
        "under_5_seconds": ours < 5.0,
        "max_abs_diff_vs_sklearn_replicates": max_diff,
        "ci": result["ci"]["intervals"],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
