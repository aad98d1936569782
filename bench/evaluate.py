"""Benchmark: ``evaluate(..., bootstrap=1000)`` on a 4,231 x 56 matrix (the split-0 test size) against the
naive baseline that calls scikit-learn once per resample in a Python loop.

The baseline is timed on a subset of resamples and extrapolated linearly to the full count (it would take
minutes); both use the same resample indices, and the JSON reports the largest difference between their
per-resample macro values. The two run interleaved, ``--repeats`` rounds (``bench/_protocol.py``); each figure
is the median [min-max] of the rounds, the speed-up is taken within each round. Writes
``bench/results/<date>_evaluate_<cpu kind>.json`` and prints it.

    .venv/bin/python bench/evaluate.py [--resamples 1000] [--baseline-resamples 20] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

from _protocol import Run, add_protocol_arguments, cpus, interleave, ratio_summary, summary, walls


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
    add_protocol_arguments(parser, quick="200 resamples, 10 of them timed for the baseline")
    args = parser.parse_args()
    if args.quick:
        args.resamples, args.baseline_resamples = 200, 10
    run = Run("bench/evaluate.py", args)

    from focaltag.evaluation import evaluate
    from focaltag.evaluation.bootstrap import bootstrap_macro, resample_indices
    from focaltag.evaluation.metrics import per_tag_scores

    y, s = synthetic_matrices()
    per_tag_scores(y[:100], s[:100])  # import sklearn outside the timed region
    n = args.baseline_resamples
    indices = resample_indices(y.shape[0], args.resamples, seed=args.seed)[:n]
    scale = args.resamples / n
    state: dict = {}

    def ours() -> None:
        state["result"] = evaluate(y, s, bootstrap=args.resamples, seed=args.seed)

    def baseline() -> tuple[float, float, float, float]:
        """(full-data wall, full-data CPU, subset wall, subset CPU): full-data metrics once + sklearn per
        resample on a subset, extrapolated to all resamples below."""
        import time

        t0, c0 = time.perf_counter(), time.process_time()
        per_tag_scores(y, s)
        full = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        state["naive"] = naive_replicates(y, s, indices)
        return full[0], full[1], time.perf_counter() - t0, time.process_time() - c0

    times = interleave({"focaltag": ours, "baseline": baseline}, args.repeats)
    parts = [t.value for t in times["baseline"]]
    base_wall = [full + subset * scale for full, _, subset, _ in parts]
    base_cpu = [full + subset * scale for _, full, _, subset in parts]
    ours_wall, ours_cpu = walls(times["focaltag"]), cpus(times["focaltag"])

    reps, _ = bootstrap_macro(y, s, n_resamples=args.resamples, seed=args.seed)
    naive_ap, naive_auc = state["naive"]
    max_diff = max(float(np.max(np.abs(reps["PR-AUC-macro"][:n] - naive_ap))),
                   float(np.max(np.abs(reps["ROC-AUC-macro"][:n] - naive_auc))))
    run.finish({
        "benchmark": "focaltag.evaluate with bootstrap",
        "matrix": list(y.shape),
        "resamples": args.resamples,
        "baseline": "sklearn average_precision_score + roc_auc_score (macro) per resample in a Python loop",
        "baseline_extrapolation": f"linear: {n} resamples timed, scaled to {args.resamples}",
        "focaltag_s": summary(ours_wall),
        "baseline_s_extrapolated": summary(base_wall),
        "baseline_measured_s": summary([full + subset for full, _, subset, _ in parts]),
        "speedup": ratio_summary(base_wall, ours_wall),
        "focaltag_cpu_s": summary(ours_cpu),
        "baseline_cpu_s_extrapolated": summary(base_cpu),
        "speedup_cpu": ratio_summary(base_cpu, ours_cpu),
        "note": "wall times depend on machine load; CPU times (process_time) are the load-independent view",
        "max_abs_diff_vs_sklearn_replicates": max_diff,
        "ci": state["result"]["ci"]["intervals"],
    })


if __name__ == "__main__":
    main()
