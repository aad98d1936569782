"""Benchmark: do focaltag's bootstrap intervals cover what they claim? Measured on the authors' real matrices.

The estimand of an interval is the expected value of the metric on a random test set of the same size from the
same population. Stand-in population: the shared validation matrices (3,802 tracks x 56 tags) of the four
all-data and the four Jamendo-only standard-sampling models. For each size (250, 500, 1,000 tracks):

* reference value = mean of the metric over ``--reference-draws`` (2,000) subsets of that size, drawn
  without replacement;
* ``--draws`` (200) other subsets; on each, the interval focaltag reports (``evaluate --bootstrap``: point
  estimate +- z * bootstrap SE, same functions, ``--resamples`` resamples) is checked against the reference.

Coverage = share of (draw, model) intervals that contain the reference; also for the paired difference of each
focal-type loss against BCE in the same training setting (``compare``). The percentile interval of the same
replicates is reported as the baseline this replaced. Target: coverage >= 0.90 at every size, for macro
PR-AUC and ROC-AUC. All draws of one size share the work: the reference draws are 0/1 weight rows over the full
matrix, and each draw's resamples are scored for all eight models in one vectorised call.

The whole experiment runs ``--repeats`` times with different seeds (round after round over the sizes,
``bench/_protocol.py``), so each coverage and width is a median [min-max] over independent draws. Writes
``bench/results/<date>_coverage_<cpu kind>.json`` and prints it.

    .venv/bin/python bench/coverage.py [--draws 200] [--reference-draws 2000] [--resamples 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _protocol import Run, add_protocol_arguments, interleave, summary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))
LOSSES = ("bce", "focal_loss", "cb_focal_loss", "db_focal_loss")
SETTINGS = ("all_training_data", "jamendo_only")
METRICS = ("PR-AUC-macro", "ROC-AUC-macro")
TARGET = 0.90


def load_models(shared: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validation ground truth and the eight standard-sampling prediction matrices (float64)."""
    ref = shared / "data" / "reference-predictions"
    if not ref.is_dir():
        sys.exit(f"coverage: {ref} not found; the bench needs ../shared (or FOCALTAG_SHARED)")
    y = np.load(ref / "validation_ground_truth.npy").astype(np.int8)
    models = {f"{setting}/{loss}": np.load(ref / setting / "standard_sampling" / "validation"
                                           / f"{loss}_predictions.npy").astype(np.float64)
              for setting in SETTINGS for loss in LOSSES}
    return y, models


def draw_subsets(n_total: int, size: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(n_draws, size) track indices, each row a subset drawn without replacement (sorted)."""
    keys = rng.random((n_draws, n_total))
    return np.sort(np.argpartition(keys, size - 1, axis=1)[:, :size], axis=1)


def macro_per_row(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Macro PR-AUC / ROC-AUC for every weight row, over the tags defined in that row (as ``evaluate``)."""
    from focaltag.evaluation.bootstrap import _macro_rows, bootstrap_tag_scores

    ap, auc = bootstrap_tag_scores(y, s, weights)
    keep = np.ones(y.shape[1], dtype=bool)
    return {"PR-AUC-macro": _macro_rows(ap, keep), "ROC-AUC-macro": _macro_rows(auc, keep)}


def reference_values(y: np.ndarray, models: dict[str, np.ndarray], size: int, n_draws: int,
                     rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Mean of each model's macro metrics over ``n_draws`` subsets of ``size`` tracks (0/1 weight rows)."""
    idx = draw_subsets(len(y), size, n_draws, rng)
    weights = np.zeros((n_draws, len(y)), dtype=np.int16)
    np.put_along_axis(weights, idx, 1, axis=1)
    out = {}
    for name, s in models.items():
        per_row = macro_per_row(y, s, weights)
        out[name] = {m: float(np.nanmean(v)) for m, v in per_row.items()}
        out[name].update({f"_rows_{m}": v for m, v in per_row.items()})
    return out


def draw_intervals(y: np.ndarray, models: dict[str, np.ndarray], idx: np.ndarray, n_resamples: int, seed: int,
                   level: float) -> dict[str, dict[str, dict[str, list[float]]]]:
    """The normal (and percentile) intervals of every model and paired difference on one subset.

    Row 0 of the weights is the subset itself (the point estimate, equal to sklearn's), rows 1.. its
    bootstrap resamples (``resample_indices`` / ``resample_weights``, as ``evaluate`` and ``compare`` draw them).
    """
    from focaltag.evaluation.bootstrap import (
        normal_interval,
        percentile_interval,
        resample_indices,
        resample_weights,
    )

    n = len(idx)
    w = resample_weights(resample_indices(n, n_resamples, seed=seed), n)
    w = np.vstack([np.ones((1, n), dtype=w.dtype), w])
    names = list(models)
    n_tags = y.shape[1]
    # all eight models in one call: columns of model k are k * n_tags .. (k + 1) * n_tags - 1
    y_sub = np.tile(y[idx], (1, len(names)))
    s_sub = np.hstack([models[k][idx] for k in names])
    from focaltag.evaluation.bootstrap import _macro_rows, bootstrap_tag_scores

    ap, auc = bootstrap_tag_scores(y_sub, s_sub, w)
    rows: dict[str, dict[str, np.ndarray]] = {}
    for k, name in enumerate(names):
        cols = np.zeros(y_sub.shape[1], dtype=bool)
        cols[k * n_tags:(k + 1) * n_tags] = True
        rows[name] = {"PR-AUC-macro": _macro_rows(ap, cols), "ROC-AUC-macro": _macro_rows(auc, cols)}
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, r in rows.items():
        out[name] = {m: {"normal": normal_interval(float(r[m][0]), r[m][1:], level),
                         "percentile": percentile_interval(r[m][1:], level), "point": [float(r[m][0])]}
                     for m in METRICS}
    for a, b in paired_names(names):
        out[f"{a} - {b}"] = {}
        for m in METRICS:
            d = rows[a][m] - rows[b][m]
            out[f"{a} - {b}"][m] = {"normal": normal_interval(float(d[0]), d[1:], level, bounds=(-1.0, 1.0)),
                                    "percentile": percentile_interval(d[1:], level), "point": [float(d[0])]}
    return out


def paired_names(names: list[str]) -> list[tuple[str, str]]:
    """Each focal-type loss against BCE within the same training setting (the report's paired tests)."""
    return [(f"{setting}/{loss}", f"{setting}/bce") for setting in SETTINGS for loss in LOSSES[1:]
            if f"{setting}/{loss}" in names]


def _cover(iv: list[float], ref: float) -> bool:
    return bool(iv[0] <= ref <= iv[1])


def run_size(y: np.ndarray, models: dict[str, np.ndarray], size: int, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    ref_rng = np.random.default_rng([args.seed, size, 1])
    ref = reference_values(y, models, size, args.reference_draws, ref_rng)
    refs = {name: {m: ref[name][m] for m in METRICS} for name in models}
    for a, b in paired_names(list(models)):
        refs[f"{a} - {b}"] = {m: float(np.nanmean(ref[a][f"_rows_{m}"] - ref[b][f"_rows_{m}"])) for m in METRICS}
    t_ref = time.perf_counter() - t0
    idx = draw_subsets(len(y), size, args.draws, np.random.default_rng([args.seed, size, 2]))
    hits: dict[tuple[str, str, str], list[bool]] = {}
    widths: dict[tuple[str, str], list[float]] = {}
    contains_point: list[bool] = []
    for d in range(args.draws):
        res = draw_intervals(y, models, idx[d], args.resamples, seed=args.seed * 100_003 + d, level=args.level)
        for name, per_metric in res.items():
            kind = "difference" if " - " in name else "model"
            for m, ivs in per_metric.items():
                iv = ivs["normal"]
                contains_point.append(iv[0] <= ivs["point"][0] <= iv[1])
                widths.setdefault((kind, m), []).append(iv[1] - iv[0])
                for method in ("normal", "percentile"):
                    hits.setdefault((kind, m, method), []).append(_cover(ivs[method], refs[name][m]))
                hits.setdefault((kind, m, "normal", name), []).append(_cover(iv, refs[name][m]))
    out: dict = {"seconds": round(time.perf_counter() - t0, 1), "reference_seconds": round(t_ref, 1),
                 "all_intervals_contain_point": bool(all(contains_point))}
    for kind in ("model", "difference"):
        for m in METRICS:
            per_name = [float(np.mean(v)) for k, v in hits.items() if len(k) == 4 and k[:3] == (kind, m, "normal")]
            key = m if kind == "model" else f"paired difference {m}"
            out[key] = {
                "coverage": round(float(np.mean(hits[(kind, m, "normal")])), 4),
                "coverage_worst_model": round(min(per_name), 4),
                "mean_width": round(float(np.mean(widths[(kind, m)])), 5),
                "percentile_coverage": round(float(np.mean(hits[(kind, m, "percentile")])), 4),
                "intervals": len(hits[(kind, m, "normal")]),
            }
    return out


def _summarise_rounds(rounds: list[dict]) -> dict:
    """One size's figures over the rounds: every number of ``run_size``'s result as median [min-max]."""
    out: dict = {"all_intervals_contain_point": all(r["all_intervals_contain_point"] for r in rounds),
                 "seconds": summary([r["seconds"] for r in rounds])}
    for key, first in rounds[0].items():
        if isinstance(first, dict):
            out[key] = {k: summary([r[key][k] for r in rounds]) if k != "intervals" else v
                        for k, v in first.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="250,500,1000", help="subset sizes, comma-separated")
    p.add_argument("--draws", type=int, default=200, help="subsets per size whose intervals are checked")
    p.add_argument("--reference-draws", type=int, default=2000, help="subsets per size behind the reference")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per interval")
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0, help="seed of the first round; round r uses seed + r")
    add_protocol_arguments(p, quick="40 draws, 400 reference draws, 100 resamples")
    args = p.parse_args(argv)
    if args.quick:
        args.draws, args.reference_draws, args.resamples = 40, 400, 100
    sizes = [int(x) for x in args.sizes.split(",")]
    run = Run("bench/coverage.py", args, argv=sys.argv[1:] if argv is None else argv)
    from focaltag.evaluation.bootstrap import INTERVAL_METHOD

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    y, models = load_models(SHARED)
    for size in sizes:
        if not 2 <= size < len(y):
            sys.exit(f"coverage: size {size} must be between 2 and {len(y) - 1}")
    result: dict = {
        "bench": "coverage", "method": INTERVAL_METHOD, "baseline_method": "percentile bootstrap (replaced)",
        "level": args.level, "target_coverage": TARGET, "tracks": int(len(y)), "models": list(models),
        "paired": [f"{a} - {b}" for a, b in paired_names(list(models))], "draws": args.draws,
        "reference_draws": args.reference_draws, "resamples": args.resamples,
        "seeds": [args.seed + r for r in range(args.repeats)], "sizes": {},
    }
    round_of = {size: 0 for size in sizes}

    def one(size: int) -> dict:
        seeded = argparse.Namespace(**{**vars(args), "seed": args.seed + round_of[size]})
        round_of[size] += 1
        out = run_size(y, models, size, seeded)
        print(f"size {size}, seed {seeded.seed}: {out['seconds']} s", file=sys.stderr, flush=True)
        return out

    timings = interleave({str(size): (lambda size=size: one(size)) for size in sizes}, args.repeats)
    for size in sizes:
        result["sizes"][str(size)] = _summarise_rounds([t.value for t in timings[str(size)]])
    # the coverage estimate of a size is the median over the rounds; its worst round is kept beside it
    worst = {m: min(r[m]["coverage"]["median"] for r in result["sizes"].values()) for m in METRICS}
    result["min_coverage"] = worst
    result["min_coverage_worst_round"] = {m: min(r[m]["coverage"]["min"] for r in result["sizes"].values())
                                          for m in METRICS}
    result["meets_target"] = bool(all(v >= TARGET for v in worst.values()))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    run.finish(result)
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
