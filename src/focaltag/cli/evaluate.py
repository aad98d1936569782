"""``focaltag evaluate``, ``focaltag compare`` and ``focaltag ensemble``: MediaEval metrics, paired bootstrap
comparison and prediction ensembles over ``.npy`` matrices (thin layer over ``focaltag.evaluation``)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, cast

from focaltag.cli._common import add_command
from focaltag.data.groups import format_group_thresholds

logger = logging.getLogger(__name__)

METRIC_ORDER = ("ROC-AUC-macro", "PR-AUC-macro", "precision-macro", "recall-macro", "F-score-macro",
                "ROC-AUC-micro", "PR-AUC-micro", "precision-micro", "recall-micro", "F-score-micro")


def register(subparsers: Any) -> None:
    _register_evaluate(subparsers)
    _register_compare(subparsers)
    _register_ensemble(subparsers)


def _add_ground_truth(p: argparse.ArgumentParser) -> None:
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument("--ground-truth", type=Path, metavar="GT.npy", help="0/1 ground-truth matrix (tracks x tags)")
    gt.add_argument("--tsv", type=Path, metavar="SPLIT.tsv",
                    help="build the ground truth from a split TSV (rows in file order, canonical sorted tags)")
    from focaltag.cli.data_options import add_dataset_part_options

    add_dataset_part_options(p, gt, what="ground truth (rows as `focaltag predict --dataset-dir` writes them)")
    p.add_argument("--tags", type=Path, default=None, metavar="FILE",
                   help="tag names of the .npy columns, one per line (default: the 56 mood/theme tags if there are 56 "
                   "columns)")


def _add_output(p: argparse.ArgumentParser) -> None:
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    out.add_argument("--markdown", action="store_true", help="print markdown tables")


def _register_evaluate(subparsers: Any) -> None:
    p = add_command(subparsers, "evaluate", func=run_evaluate,
                    help="MediaEval metrics (ROC-AUC / PR-AUC, macro and micro) of a prediction matrix",
                    description="Score a tracks x tags prediction matrix exactly as the MediaEval task's "
                    "evaluate.py (sklearn, macro and micro), optionally with head/middle/tail groups, a per-tag "
                    "table, F-score-optimised decisions and bootstrap confidence intervals.")
    _add_ground_truth(p)
    p.add_argument("--predictions", type=Path, required=True, metavar="PRED.npy", help="score matrix")
    _add_output(p)
    p.add_argument("--train-tsv", type=Path, action="append", default=None, metavar="FILE",
                   help="training metadata (official TSV or ID PATH TAG... list); repeat to sum counts; "
                   "adds head/middle/tail groups")
    p.add_argument("--group-thresholds", default=format_group_thresholds(), metavar="HEAD,TAIL",
                   help="head: count > HEAD, middle: TAIL < count <= HEAD, tail: count <= TAIL")
    p.add_argument("--groups", type=Path, default=None, metavar="YAML",
                   help="custom groups, a YAML file of 'name: [tag, ...]'")
    p.add_argument("--per-tag", action="store_true",
                   help="add PR-AUC, ROC-AUC, positives and training count per tag")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--thresholds-from", nargs=2, type=Path, default=None, metavar=("VAL_GT", "VAL_PRED"),
                     help="pick per-tag thresholds on these matrices as MediaEval's calculate_decisions.py does "
                     "(F-score maximum of the precision-recall curve) and add precision/recall/F-score "
                     "(VAL_GT may be .npy or a split .tsv)")
    thr.add_argument("--thresholds", type=Path, default=None, metavar="FILE",
                     help="apply a thresholds file, TAG<TAB>VALUE per line (the official format, also written "
                     "by --save-thresholds)")
    p.add_argument("--save-thresholds", type=Path, default=None, metavar="FILE",
                   help="write the thresholds picked by --thresholds-from as TAG<TAB>VALUE")
    p.add_argument("--decision-rule", choices=("gt", "ge"), default="gt",
                   help="gt: a tag is on when score > threshold (the official MediaEval rule, default); "
                   "ge: score >= threshold")
    p.add_argument("--save-decisions", type=Path, default=None, metavar="OUT.npy",
                   help="write the yes/no decisions (bool, tracks x tags) made with the thresholds")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap resamples for 95%% intervals of every macro metric: point estimate +- 1.96 "
                   "bootstrap standard errors (0 = off; 1000 typical)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _register_compare(subparsers: Any) -> None:
    from focaltag.evaluation.multiple import ADJUST_METHODS, DEFAULT_ADJUST

    p = add_command(subparsers, "compare", func=run_compare,
                    help="paired-bootstrap differences of prediction matrices' macro metrics, adjusted for "
                    "multiple testing",
                    description="Compare model A with one or more models B on the same tracks: macro ROC-AUC / "
                    "PR-AUC of each, the difference A - B, its two-sided p-value (difference / paired-bootstrap "
                    "standard error) and that p-value adjusted for multiple testing over the family of every row "
                    "of the table (each B file x each metric). Intervals are simultaneous 95% intervals of the "
                    "family (Bonferroni) with --adjust holm|bonferroni, per comparison with --adjust none.")
    _add_ground_truth(p)
    p.add_argument("a", type=Path, metavar="A.npy", help="predictions of model A")
    p.add_argument("b", type=Path, nargs="+", metavar="B.npy",
                   help="predictions of model B; several files compare A with each")
    p.add_argument("--adjust", default=DEFAULT_ADJUST, metavar="|".join(ADJUST_METHODS),
                   help="multiple-testing adjustment of the p-values over the table's family: holm (Holm's "
                   "step-down), bonferroni, or none")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (>= 2)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _add_output(p)


def _register_ensemble(subparsers: Any) -> None:
    p = add_command(subparsers, "ensemble", func=run_ensemble,
                    help="average prediction matrices (the paper's ensemble), optionally weighted",
                    description="Write the arithmetic mean of prediction matrices (the paper's ensemble), a "
                    "weighted mean (--weights), or a mean with non-negative weights that maximise validation "
                    "macro PR-AUC (--optimize-on VAL_GT VAL_A VAL_B ..., one validation matrix per member).")
    p.add_argument("members", nargs="+", type=Path, metavar="PRED.npy", help="member prediction matrices")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.npy", help="ensemble matrix to write")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="one non-negative weight per member (normalised to sum 1)")
    w.add_argument("--optimize-on", nargs="+", type=Path, default=None, metavar="FILE",
                   help="VAL_GT then one validation matrix per member, in the members' order")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# ----------------------------------------------------------------------------------------------- helpers
def _jsonable(obj: Any) -> Any:
    """NaN/inf -> null so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _ground_truth(args: argparse.Namespace, n_cols_hint: int | None = None) -> tuple[Any, list[str]]:
    from focaltag.data.metadata import read_tag_list
    from focaltag.errors import ConfigError
    from focaltag.evaluation.inputs import ground_truth_from_tsv, load_matrix
    from focaltag.evaluation.metrics import default_tag_names

    if getattr(args, "dataset_dir", None) is not None:
        from focaltag.cli.data_options import dataset_ground_truth

        if args.tags is not None:
            raise ConfigError("--tags names the columns of a .npy ground truth; with --dataset-dir the tags come "
                              "from the dataset, so drop --tags")
        return dataset_ground_truth(args)
    if args.tsv is not None:
        if args.tags is not None:
            raise ConfigError("--tags names the columns of a .npy ground truth; with --tsv the tags come "
                              "from the TSV, so drop --tags")
        return ground_truth_from_tsv(args.tsv)
    gt = load_matrix(args.ground_truth, what="ground truth")
    names = read_tag_list(args.tags) if args.tags is not None else default_tag_names(gt.shape[1])
    return gt, list(names)


def _check_width(names: list[str], matrix: Any, path: Path, what: str) -> None:
    from focaltag.errors import EvaluationError

    if matrix.shape[1] != len(names):
        raise EvaluationError(f"{what} {path} has {matrix.shape[1]} tag columns but the ground truth has "
                              f"{len(names)} tags; expected the same tag order and count")


def _check_bootstrap(n: int, flag: str = "--bootstrap") -> None:
    from focaltag.errors import ConfigError

    if n < 0:
        raise ConfigError(f"{flag} must be >= 0 resamples, got {n}")


# ----------------------------------------------------------------------------------------------- evaluate
def _thresholds(args: argparse.Namespace, names: list[str]) -> Any:
    from focaltag.errors import ConfigError
    from focaltag.evaluation.inputs import load_ground_truth, load_matrix
    from focaltag.evaluation.thresholds import load_thresholds, mediaeval_thresholds, save_thresholds

    if args.save_thresholds is not None and args.thresholds_from is None:
        raise ConfigError("--save-thresholds needs --thresholds-from VAL_GT VAL_PRED to pick the thresholds")
    if args.thresholds is not None:
        return load_thresholds(args.thresholds)
    if args.thresholds_from is None:
        return None
    val_gt_path, val_pred_path = args.thresholds_from
    val_gt, val_names = load_ground_truth(val_gt_path, what="validation ground truth")
    if val_names is not None and val_names != names:
        raise ConfigError(f"{val_gt_path}: its tags differ from the evaluated ground truth's; use the same "
                          "tag set for validation and evaluation")
    val_pred = load_matrix(val_pred_path, what="validation predictions")
    _check_width(names, val_pred, val_pred_path, "validation predictions")
    thr = mediaeval_thresholds(val_gt, val_pred, tag_names=names)
    mapping = dict(zip(names, (float(t) for t in thr), strict=True))
    if args.save_thresholds is not None:
        save_thresholds(args.save_thresholds, mapping)
        logger.info("wrote %d thresholds to %s", len(mapping), args.save_thresholds)
    return mapping


def _save_decisions(path: Path, pred: Any, thresholds: Any, names: list[str], rule: str) -> None:
    """The yes/no matrix behind the precision/recall/F-score, as a bool ``.npy`` (like the official
    ``*_decisions.npy``)."""
    import numpy as np

    from focaltag._io import atomic_write
    from focaltag.evaluation.thresholds import decide, thresholds_array

    decisions = decide(pred, thresholds_array(thresholds, names), rule)
    with atomic_write(path, "wb") as fh:
        np.save(fh, decisions)
    logger.info("wrote %d x %d decisions to %s", *decisions.shape, path)


def run_evaluate(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError
    from focaltag.evaluation import evaluate
    from focaltag.evaluation.groups import count_training_tags, load_groups, parse_group_thresholds
    from focaltag.evaluation.inputs import load_matrix

    _check_bootstrap(args.bootstrap)
    group_thresholds = parse_group_thresholds(args.group_thresholds)
    gt, names = _ground_truth(args)
    pred = load_matrix(args.predictions, what="predictions")
    _check_width(names, pred, args.predictions, "predictions")
    counts = count_training_tags(args.train_tsv, names) if args.train_tsv else None
    groups = load_groups(args.groups, names) if args.groups is not None else None
    if args.save_decisions is not None and args.thresholds is None and args.thresholds_from is None:
        raise ConfigError("--save-decisions needs thresholds: add --thresholds FILE or --thresholds-from "
                          "VAL_GT VAL_PRED")
    thresholds = _thresholds(args, names)
    result = evaluate(gt, pred, tag_names=names, train_counts=counts, group_thresholds=group_thresholds,
                      groups=groups, per_tag=args.per_tag, bootstrap=args.bootstrap, seed=args.seed,
                      thresholds=thresholds, decision_rule=args.decision_rule)
    if args.save_decisions is not None:
        _save_decisions(args.save_decisions, pred, thresholds, names, args.decision_rule)
    if args.json:
        _print_json(result)
    else:
        print(render_evaluation(result, markdown=args.markdown))
    return 0


def render_evaluation(result: dict[str, Any], *, markdown: bool = False) -> str:
    """Metrics table, then groups and per-tag tables when present."""
    from focaltag.data.tags import short_tag
    from focaltag.evaluation.tables import fmt_interval, format_table

    intervals = result.get("ci", {}).get("intervals", {})
    header = ["metric", "value"] + ([f"{int(round(result['ci']['level'] * 100))}% CI"] if intervals else [])
    rows = [[m, result[m]] + ([fmt_interval(intervals.get(m))] if intervals else [])
            for m in METRIC_ORDER if m in result]
    parts = [format_table(header, rows, markdown=markdown)]
    if intervals:
        ci = result["ci"]
        parts.append(f"({ci['method']}, {ci['resamples']} resamples, seed {ci['seed']})")
    if result.get("excluded_tags"):
        parts.append("excluded from the macro averages (no positive or no negative track): "
                     + ", ".join(short_tag(t) for t in result["excluded_tags"]))
    if "groups" in result:
        with_ci = any("ci" in g for g in result["groups"].values())
        gh = ["group", "tags", "PR-AUC", "ROC-AUC"] + (["PR-AUC CI", "ROC-AUC CI"] if with_ci else [])
        grows = []
        for name, g in result["groups"].items():
            row = [name, g["n_tags"], g["PR-AUC"], g["ROC-AUC"]]
            if with_ci:
                row += [fmt_interval(g.get("ci", {}).get("PR-AUC")), fmt_interval(g.get("ci", {}).get("ROC-AUC"))]
            grows.append(row)
        parts += ["", "### groups" if markdown else "groups", format_table(gh, grows, markdown=markdown)]
    if "per_tag" in result:
        th = ["tag", "PR-AUC", "ROC-AUC", "positives", "train_count"]
        trows = [[short_tag(t), v["PR-AUC"], v["ROC-AUC"], v["positives"], v["train_count"]]
                 for t, v in result["per_tag"].items()]
        parts += ["", "### per tag" if markdown else "per tag", format_table(th, trows, markdown=markdown)]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- compare
def run_compare(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError
    from focaltag.evaluation import paired_bootstrap
    from focaltag.evaluation.bootstrap import INTERVAL_METHOD
    from focaltag.evaluation.inputs import load_matrix
    from focaltag.evaluation.multiple import check_adjust_method

    check_adjust_method(args.adjust)
    if args.bootstrap < 2:
        raise ConfigError(f"--bootstrap must be >= 2 resamples for a comparison (a standard error needs two), "
                          f"got {args.bootstrap}")
    gt, names = _ground_truth(args)
    a = load_matrix(args.a, what="predictions A")
    _check_width(names, a, args.a, "predictions A")
    many = len(args.b) > 1
    comparisons: list[dict[str, Any]] = []
    for i, path in enumerate(args.b, start=1):
        what = f"predictions B{i}" if many else "predictions B"
        b = load_matrix(path, what=what)
        _check_width(names, b, path, what)
        stats = paired_bootstrap(gt, a, b, n_resamples=args.bootstrap, seed=args.seed, tag_names=names)
        comparisons.append({"B": str(path), "label": f"B{i}" if many else "B", **stats})
    family = _adjust_family(comparisons, args.adjust, level=0.95)
    result = {"A": str(args.a), "B": [str(p) for p in args.b], "resamples": args.bootstrap, "seed": args.seed,
              "level": 0.95, "method": INTERVAL_METHOD, "adjust": family, "comparisons": comparisons}
    if args.json:
        _print_json(result)
        return 0
    print(render_comparison(result, markdown=args.markdown))
    return 0


def _adjust_family(comparisons: list[dict[str, Any]], method: str, *, level: float) -> dict[str, Any]:
    """Adjust the p-values of every (B, metric) row of the table as one family, in place: each metric entry
    gains ``p_value_adjusted`` and ``ci_simultaneous`` (the interval matching the adjustment); returns the
    family's description for the output."""
    from focaltag.evaluation.bootstrap import se_interval
    from focaltag.evaluation.multiple import adjust_p_values, describe_intervals, simultaneous_level

    rows = [(c, m) for c in comparisons for m in c if isinstance(c[m], dict)]
    metrics = list(dict.fromkeys(m for _, m in rows))
    adjusted = adjust_p_values([c[m]["p_value"] for c, m in rows], method,
                               labels=[f"{c['label']} ({c['B']}) {m}" for c, m in rows])
    each = simultaneous_level(level, len(rows), method)
    for (c, m), p_adj in zip(rows, adjusted, strict=True):
        c[m]["p_value_adjusted"] = float(p_adj)
        c[m]["ci_simultaneous"] = se_interval(c[m]["diff"], c[m]["se"], each, bounds=(-1.0, 1.0))
    return {"method": method, "size": len(rows), "n_B": len(comparisons), "metrics": metrics,
            "family": f"every row of the table: {len(comparisons)} B file{'s' if len(comparisons) > 1 else ''} "
                      f"x {len(metrics)} metrics ({', '.join(metrics)})",
            "interval_level": each, "intervals": describe_intervals(level, len(rows), method)}


def render_comparison(result: dict[str, Any], *, markdown: bool = False) -> str:
    """The compare table: one row per (B, metric), raw and adjusted p-values side by side, and the notes that
    name the adjusted family and what the intervals cover."""
    from focaltag.evaluation.multiple import ADJUST_LABELS
    from focaltag.evaluation.tables import fmt_interval, format_table

    family = result["adjust"]
    method = family["method"]
    simultaneous = method != "none" and family["size"] > 1
    ci_head = "95% simultaneous CI of A - B" if simultaneous else "95% CI of A - B"
    adj_head = f"p ({ADJUST_LABELS[method]})" if method != "none" else "p (unadjusted)"
    rows = []
    for c in result["comparisons"]:
        for m in family["metrics"]:
            s = c[m]
            rows.append([c["label"], m, s["A"], s["B"], s["diff"],
                         fmt_interval(cast(list, s["ci_simultaneous"])), _fmt_p(s["p_value"]),
                         _fmt_p(s["p_value_adjusted"])])
    lines = [f"A = {result['A']}"] + [f"{c['label']} = {c['B']}" for c in result["comparisons"]]
    lines.append(format_table(["B file", "metric", "A", "B", "A - B", ci_head, "p (raw)", adj_head], rows,
                              markdown=markdown))
    if method == "none":
        adjusted = f"{adj_head}: NOT adjusted for the {family['size']} tests of this table (--adjust none)"
    else:
        how = "Holm's step-down method" if method == "holm" else "Bonferroni's method"
        adjusted = f"{adj_head}: adjusted by {how} over the family of {family['size']} tests, {family['family']}"
    lines += [f"(paired bootstrap over tracks, {result['resamples']} resamples, seed {result['seed']}; p (raw): "
              "two-sided p-value of A - B = 0 from the bootstrap SE of A - B)",
              f"({adjusted})", f"(intervals: {family['intervals']})"]
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ----------------------------------------------------------------------------------------------- ensemble
def run_ensemble(args: argparse.Namespace) -> int:
    import numpy as np

    from focaltag._io import atomic_write
    from focaltag.errors import ConfigError
    from focaltag.evaluation.ensemble import mean_ensemble, optimize_weights, weighted_ensemble
    from focaltag.evaluation.inputs import load_ground_truth, load_matrix

    names = [str(m) for m in args.members]
    members = [load_matrix(m, what="predictions") for m in args.members]
    result: dict[str, Any] = {"output": str(args.out), "members": names}
    weights = None
    if args.weights is not None:
        if len(args.weights) != len(members):
            raise ConfigError(f"--weights needs one weight per member ({len(members)}), got {len(args.weights)}")
        weights = args.weights
    elif args.optimize_on is not None:
        if len(args.optimize_on) != len(members) + 1:
            raise ConfigError(f"--optimize-on needs VAL_GT plus one validation matrix per member "
                              f"({len(members) + 1} files), got {len(args.optimize_on)}")
        val_gt, _ = load_ground_truth(args.optimize_on[0], what="validation ground truth")
        val = [load_matrix(p, what="validation predictions") for p in args.optimize_on[1:]]
        for path, mat in zip(args.optimize_on[1:], val, strict=True):
            if mat.shape[1] != members[0].shape[1]:
                raise ConfigError(f"validation predictions {path} have {mat.shape[1]} tag columns but the "
                                  f"members have {members[0].shape[1]}; use the same tag order")
        weights, score = optimize_weights(val_gt, val, names=[str(p) for p in args.optimize_on[1:]])
        mean_score = _validation_score(val_gt, val)
        result["validation"] = {"PR-AUC-macro (mean)": mean_score, "PR-AUC-macro (optimised)": score}
        if not args.json:
            print(f"optimised weights (validation PR-AUC-macro {score:.4f}, plain mean {mean_score:.4f}):")
            for name, w in zip(names, weights, strict=True):
                print(f"  {w:.4f}  {name}")
    if weights is None:
        out = mean_ensemble(members, names=names)
        result["weights"] = [1.0 / len(members)] * len(members)
    else:
        out = weighted_ensemble(members, weights, names=names)
        total = float(sum(weights))
        result["weights"] = [float(w) / total for w in weights]
    with atomic_write(args.out, "wb") as fh:
        np.save(fh, out)
    result["shape"] = list(out.shape)
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {args.out} ({out.shape[0]} x {out.shape[1]}, mean of {len(members)} members"
              + (", weighted)" if weights is not None else ")"))
    return 0


def _validation_score(val_gt: Any, val: list[Any]) -> float:
    from focaltag.evaluation.ensemble import mean_ensemble
    from focaltag.evaluation.metrics import check_matrices, per_tag_scores, undefined_tags

    y, s = check_matrices(val_gt, mean_ensemble(val))
    keep = ~undefined_tags(y, warn=False)
    return float(per_tag_scores(y, s)[0][keep].mean())
