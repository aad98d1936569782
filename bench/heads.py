"""Benchmark of ``focaltag head train`` (issue 31): does an imbalance loss pay off on real, imbalanced labels, and
is training on stored embeddings quick?

Quality. The labelled set is ``bench/music_data.py``'s real recordings with their multi-label tag profile (game,
album where a game ships several, composer, genre; read from the packages' metadata and the files' tags); tags
with fewer positives than ``--min-positives`` are dropped, since a fold without a positive cannot be scored.
Each of the project's losses (bce, focal, cb-focal, db-focal), with standard and with class-aware sampling, is
cross-validated through the heads library (:func:`focaltag.library.heads.cross_validate_head`: the same
stratified folds, the head size chosen by out-of-fold macro PR-AUC, bootstrap intervals), on the embeddings of
the default ``similar`` model (``--base``; cached by ``bench/similar.py``). References on the same folds: a
logistic regression (scikit-learn, one per tag, standardised inputs) on MFCC mean+std, and the same on the
base embeddings. Figures: out-of-fold macro PR-AUC (and ROC-AUC) with the project's bootstrap intervals.

Speed. The time ``head train`` spends once the embeddings are stored: cross-validation as above with the
default options (focal loss, linear and one-hidden-layer heads, 5 folds, plus the BCE comparison) and the final
fit on all tracks, on ``--speed-tracks`` tracks (default 1,000). There are not 1,000 labelled real tracks here, so
the rows are synthetic: the real label rows drawn with replacement, each with its real embedding plus Gaussian
noise of 10 % of each dimension's spread (or, with ``--speed-dim D``, a Gaussian D-d vector plus one direction
per positive tag, so that no base model has to run). Interleaved repeats (``bench/_protocol.py``), median [min-max].
Writes ``bench/results/<date>_heads_<cpu kind>.json``.

    .venv/bin/python bench/heads.py [--music DIR] [--work DIR] [--base NAME] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == BENCH:
    # bench/coverage.py must not stand in for the "coverage" package numba tries (see bench/similar.py)
    sys.path.pop(0)


def _similar() -> ModuleType:
    """bench/similar.py, which loads the other sibling modules (``similar.sibling``)."""
    if "similar" not in sys.modules:
        spec = importlib.util.spec_from_file_location("similar", BENCH / "similar.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["similar"] = module
        spec.loader.exec_module(module)
    return sys.modules["similar"]


LOSSES = ("bce", "focal", "cb_focal", "db_focal")
SAMPLINGS = ("standard", "class-aware")
FALLBACK_BASE = "won2020-mtat-musicnn"


def tag_matrix(tags: Sequence[Sequence[str]], min_positives: int) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """0/1 matrix of the tags with at least ``min_positives`` tracks (columns sorted by count, then name), and
    the counts of the tags left out."""
    counts: dict[str, int] = {}
    for row in tags:
        for t in set(row):
            counts[t] = counts.get(t, 0) + 1
    kept = sorted((t for t, c in counts.items() if c >= min_positives), key=lambda t: (-counts[t], t))
    index = {t: j for j, t in enumerate(kept)}
    y = np.zeros((len(tags), len(kept)), dtype=np.int8)
    for i, row in enumerate(tags):
        for t in row:
            if t in index:
                y[i, index[t]] = 1
    return y, kept, {t: c for t, c in sorted(counts.items()) if c < min_positives}


def logistic_oof(x: np.ndarray, y: np.ndarray, folds: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of one logistic regression per tag (inputs standardised on the training folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(y.shape, dtype=np.float64)
    for f in np.unique(folds):
        test = folds == f
        model = make_pipeline(StandardScaler(),
                              OneVsRestClassifier(LogisticRegression(max_iter=5000, random_state=seed)))
        model.fit(x[~test], y[~test])
        out[test] = model.predict_proba(x[test])
    return out


def macro_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    ci = metrics.get("ci", {}).get("intervals", {})
    return {"PR-AUC": metrics["PR-AUC-macro"], "PR-AUC_ci": ci.get("PR-AUC-macro"),
            "ROC-AUC": metrics["ROC-AUC-macro"], "ROC-AUC_ci": ci.get("ROC-AUC-macro")}


def scored(y: np.ndarray, scores: np.ndarray, names: Sequence[str], *, resamples: int, seed: int) -> dict[str, Any]:
    from focaltag.evaluation import evaluate

    return macro_figures(evaluate(y, scores, tag_names=list(names), bootstrap=resamples, seed=seed))


def base_vectors(base: str, music: Any, work: Path, threads: int) -> np.ndarray:
    """The base's chunk-mean embeddings from ``bench/similar.py``'s cache (computed there if missing), on the
    path that benchmark used (``forward_head(pre_logits=True)`` on the tagger's chunks). ``a+b+c`` (or
    ``ensemble:a+b+c``) is an ensemble: its members' vectors side by side, as the Tagger gives them."""
    similar = _similar()
    keys = similar.track_keys(music.manifest)
    parts = []
    for member in base.removeprefix("ensemble:").split("+"):
        chunks, _ = similar.direct_chunk_embeddings(member, music.paths, keys, work, threads)
        parts.append(np.stack([similar.pool(c, "mean") for c in chunks]))
    return np.concatenate(parts, axis=1)


def default_base(results_dir: Path) -> str:
    """The default chosen by the newest ``similar-quality`` results file (the ensemble choice where only an
    ensemble met the bar), else :data:`FALLBACK_BASE`."""
    files = sorted(results_dir.glob("*_similar-quality_*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(files):
        try:
            decision = json.loads(path.read_text(encoding="utf-8"))["results"]["decision"]
        except (KeyError, ValueError, OSError):
            continue
        single_ok = decision.get("beats_mfcc_clearly") and decision.get("matches_musicnn") is not False
        return str(decision["default"] if single_ok or "with_ensembles" not in decision
                   else decision["with_ensembles"]["default"])
    return FALLBACK_BASE


def quality(x: np.ndarray, mfcc: np.ndarray, y: np.ndarray, names: list[str], args: argparse.Namespace
            ) -> dict[str, Any]:
    from focaltag.library.heads import cross_validate_head
    from focaltag.training.head import HeadOptions, multilabel_folds

    rows: dict[str, Any] = {}
    for loss in LOSSES:
        for sampling in (SAMPLINGS[:1] if args.quick else SAMPLINGS):
            t0 = time.perf_counter()
            opts = HeadOptions(loss=loss, sampling=sampling, folds=args.folds, seed=args.seed)
            report = cross_validate_head(x, y, names, opts, bootstrap=args.resamples)
            row = macro_figures(report.metrics)
            row.update({"head": "linear" if report.hidden_dim == 0 else f"hidden {report.hidden_dim}",
                        "candidates": {("linear" if h == 0 else f"hidden {h}"): s for h, s in report.candidates.items()},
                        "vs_bce_standard": report.comparison.get("macro", report.comparison),
                        "seconds": round(time.perf_counter() - t0, 2)})
            rows[f"{loss.replace('_', '-')} / {sampling}"] = row
            print(f"{loss} {sampling}: PR-AUC {row['PR-AUC']:.4f}", file=sys.stderr, flush=True)
    folds = multilabel_folds(y, args.folds, seed=args.seed)
    rows["logistic regression on MFCC mean+std"] = scored(y, logistic_oof(mfcc, y, folds, seed=args.seed), names,
                                                         resamples=args.resamples, seed=args.seed)
    rows[f"logistic regression on {args.base}"] = scored(y, logistic_oof(x, y, folds, seed=args.seed), names,
                                                        resamples=args.resamples, seed=args.seed)
    return rows


def synthetic_rows(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows: real label rows drawn with replacement, their embeddings plus noise (10 % of each spread)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=n)
    noise = rng.normal(size=(n, x.shape[1])) * (0.1 * x.std(axis=0))
    return (x[idx] + noise).astype(np.float32), y[idx]


def gaussian_rows(y: np.ndarray, n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows without stored embeddings: real label rows drawn with replacement, each embedding a Gaussian
    vector plus one random direction per positive tag (so that the head has something to learn)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=n)
    directions = rng.normal(size=(y.shape[1], dim))
    return (rng.normal(size=(n, dim)) + y[idx] @ directions).astype(np.float32), y[idx]


def speed(x: np.ndarray | None, y: np.ndarray, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from focaltag.library.heads import cross_validate_head
    from focaltag.training.head import HeadOptions, fit_head

    protocol = _similar().sibling("_protocol")

    if x is None:
        xs, ys = gaussian_rows(y, args.speed_tracks, args.speed_dim, args.seed)
        rows = (f"synthetic: real label rows resampled with replacement, Gaussian {args.speed_dim}-d embeddings "
                "with one direction per tag")
    else:
        xs, ys = synthetic_rows(x, y, args.speed_tracks, args.seed)
        rows = "synthetic: real label rows resampled with replacement, real embeddings plus 10 % noise"
    opts = HeadOptions(folds=args.folds, seed=args.seed)

    def train() -> int:
        report = cross_validate_head(xs, ys, names, opts, bootstrap=args.resamples)
        fit_head(xs, ys, hidden_dim=report.hidden_dim, options=opts)
        return report.hidden_dim

    times = protocol.interleave({"train": train}, args.repeats)["train"]
    return {"tracks": args.speed_tracks, "dim": int(xs.shape[1]), "tags": len(names),
            "what": "cross-validation (focal, standard sampling, linear vs hidden 256, 5 folds, plus the BCE "
                    f"comparison, {args.resamples} bootstrap resamples) and the final fit on all rows",
            "rows": rows,
            "options": {"steps": opts.steps, "batch_size": opts.batch_size, "hidden_sizes": list(opts.hidden_sizes)},
            "wall_s": protocol.summary(protocol.walls(times)), "cpu_s": protocol.summary([t.cpu for t in times]),
            "chosen_head": times[0].value}


def main(argv: list[str] | None = None) -> None:
    similar = _similar()
    protocol, music_data = similar.sibling("_protocol"), similar.sibling("music_data")
    RESULTS_DIR, Run, add_protocol_arguments = protocol.RESULTS_DIR, protocol.Run, protocol.add_protocol_arguments  # noqa: N806
    DEFAULT_CACHE, describe, load_set = music_data.DEFAULT_CACHE, music_data.describe, music_data.load_set  # noqa: N806
    DEFAULT_WORK, mfcc_vectors, track_keys = similar.DEFAULT_WORK, similar.mfcc_vectors, similar.track_keys  # noqa: N806

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="bench/similar.py's embedding cache")
    parser.add_argument("--base", default=None, help="embedding model (default: bench/similar.py's choice)")
    parser.add_argument("--max-per-album", type=int, default=None,
                        help="at most this many tracks per album, as bench/similar.py (default: all)")
    parser.add_argument("--min-positives", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-tracks", type=int, default=1000)
    parser.add_argument("--speed-dim", type=int, default=None,
                        help="time on Gaussian embeddings of this size instead of the base's (no base needed)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    add_protocol_arguments(parser, quick="standard sampling only (no class-aware rows); speed on 500 tracks")
    args = parser.parse_args(argv)
    if args.quick:
        args.speed_tracks = min(args.speed_tracks, 500)
    args.base = args.base or default_base(args.results_dir or RESULTS_DIR)
    name = "heads" if not (args.skip_quality or args.skip_speed) else "heads-speed" if args.skip_quality \
        else "heads-quality"
    run = Run("bench/heads.py", args, name=name)

    music = load_set(args.music, max_per_album=args.max_per_album)
    y, names, dropped = tag_matrix(music.tags, args.min_positives)
    need_base = not args.skip_quality or (not args.skip_speed and args.speed_dim is None)
    x = base_vectors(args.base, music, args.work, args.threads) if need_base else None
    results: dict[str, Any] = {
        "data": {**describe(music.manifest), "tags_used": {n: int(c) for n, c in zip(names, y.sum(axis=0),
                                                                                     strict=True)},
                 "tags_dropped_below_min_positives": dropped, "min_positives": args.min_positives,
                 "max_per_album": args.max_per_album,
                 "positives_per_track": float(y.sum(axis=1).mean())},
        "base": args.base if x is not None else None, "embedding_dim": int(x.shape[1]) if x is not None else None,
        "folds": args.folds, "seed": args.seed,
    }
    if not args.skip_quality:
        assert x is not None
        mfcc, _ = mfcc_vectors(music.paths, track_keys(music.manifest), args.work)
        results["quality"] = quality(x, mfcc, y, names, args)
    if not args.skip_speed:
        results["speed"] = speed(x, y, names, args)
    run.finish(results)


if __name__ == "__main__":
    main()
