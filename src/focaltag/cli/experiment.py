"""``focaltag experiment run|report``: the paper's grid in one command, or its tables from outside matrices."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, add_group, is_main_process
from focaltag.data.groups import format_group_thresholds
from focaltag.errors import ConfigError, EvaluationError

log = logging.getLogger(__name__)


def _named_path(text: str) -> tuple[str, Path]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PRED.npy, got {text!r}")
    name, path = text.split("=", 1)
    if not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PRED.npy, got {text!r}")
    return name.strip(), Path(path.strip())


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "experiment", help="run the paper's experiment grid, or report on given matrices")
    run = add_command(
        sub, "run", func=_run,
        help="train every run of an experiment file, predict, ensemble, evaluate, write report.md",
        description="Train the named runs of an experiment file (finished runs are skipped, a killed run "
                    "resumes), predict validation (16 chunks) and test (32 chunks) matrices, form the "
                    "ensembles and write DIR/report.md, DIR/results.json and DIR/figures/.")
    run.add_argument("config", metavar="NAME|FILE", help="a shipped experiment by name (paper, genre, instrument, "
                     "top50tags: `focaltag config list`) or an experiment YAML file (a path with '/' or ending .yaml)")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help="experiment folder (reused to resume)")
    run.add_argument("--only", nargs="+", metavar="NAME", default=None, help="train only these runs")
    run.add_argument("--preset", default=None, help="a preset of the experiment file, e.g. demo")
    run.add_argument("--splits", default=None, metavar="0,1,...",
                     help="cross-validation: repeat the grid on these official splits; default: the file's splits")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="change the base training config of every run, e.g. data.dataset_dir=/data/mtg "
                          "or model.init_from=pretrained.pt (repeatable)")
    run.add_argument("--init-from", default=None, metavar="CKPT",
                     help="start every run from this pretrained checkpoint (= --set model.init_from=CKPT)")
    run.add_argument("--bootstrap", type=int, default=None, metavar="N", help="bootstrap resamples (override)")
    run.add_argument("--no-figures", action="store_true", help="write report.md and results.json only")

    rep = add_command(
        sub, "report", func=_report,
        help="Tables I-IV (with 95%% intervals and paired tests) from prediction matrices made elsewhere",
        description="Score prediction matrices (e.g. the authors' published ones), their mean ensemble and "
                    "paired bootstrap tests against BCE; print the report, and with --out write report.md, "
                    "results.json and figures.")
    rep.add_argument("--predictions", nargs="+", type=_named_path, required=True, metavar="NAME=PRED.npy",
                     help="(n_tracks, n_tags) score matrices, one per system")
    rep.add_argument("--class-aware", nargs="+", type=_named_path, default=[], metavar="NAME=PRED.npy",
                     help="matrices of the same losses trained with class-aware sampling (Table III)")
    rep.add_argument("--ground-truth", type=Path, required=True, metavar="GT.npy", help="0/1 label matrix")
    rep.add_argument("--train-tsv", nargs="+", type=Path, default=[], metavar="FILE",
                     help="training lists whose tag counts define head/middle/tail (summed over files)")
    rep.add_argument("--tags", type=Path, default=None, metavar="FILE",
                     help="tag names, one per line, in column order (default: the 56 mood/theme tags)")
    rep.add_argument("--baseline", default="bce", help="system every other one is tested against")
    rep.add_argument("--adjust", default="holm", metavar="holm|bonferroni|none",
                     help="multiple-testing adjustment of each table's p-values, over the family of that table's "
                     "rows x the metrics it tests: holm (Holm's step-down), bonferroni, or none")
    rep.add_argument("--no-ensemble", action="store_true", help="do not add the mean ensemble")
    rep.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0: none)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--group-thresholds", default=format_group_thresholds(), metavar="HEAD,TAIL",
                     help="head: count > HEAD, tail: count <= TAIL; 'auto' keeps the paper's shares")
    rep.add_argument("--subset", default="validation", help="name of the scored split, for the report text")
    rep.add_argument("--synthetic", action="store_true", help="mark the report as synthetic data")
    rep.add_argument("--out", type=Path, default=None, metavar="DIR", help="write report.md, results.json, "
                     "figures/ here")
    rep.add_argument("--no-figures", action="store_true", help="with --out: no PNG figures")


def _run(args: argparse.Namespace) -> int:
    from focaltag.config import resolve_config
    from focaltag.experiments.runner import run_experiment
    from focaltag.experiments.spec import load_experiment, parse_splits

    spec = load_experiment(resolve_config(args.config, "experiments"))
    splits = parse_splits(args.splits) if args.splits else None
    if args.bootstrap is not None and args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected >= 0 resamples, got {args.bootstrap}")
    overrides = list(args.overrides)
    if args.init_from is not None:
        from focaltag.models.resolve import catalogue_name_of

        named = catalogue_name_of(args.init_from) is not None  # e.g. won2020-msd-short-res, pulled on first use
        if not named and not Path(args.init_from).is_file():
            raise ConfigError(f"--init-from {args.init_from}: checkpoint not found (nor a catalogue name, see "
                              "'focaltag models list')")
        overrides.append(f"model.init_from={args.init_from if named else Path(args.init_from).resolve()}")
    result = run_experiment(spec, args.out, only=args.only, preset=args.preset, splits=splits,
                            bootstrap=args.bootstrap, overrides=overrides,
                            figures=not args.no_figures)
    if is_main_process():  # under torchrun every rank finishes the grid; the report is printed once
        print(result.report_text)
        print(f"report: {result.report_path}", file=sys.stderr)
    return 1 if result.failed else 0


def _load_matrix(path: Path, what: str) -> Any:
    import numpy as np

    if not path.is_file():
        raise EvaluationError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise EvaluationError(f"{what} {path} is not a readable .npy matrix ({err})") from None


def _report(args: argparse.Namespace) -> int:
    from focaltag.experiments.report import (
        ReportOptions,
        build_results,
        default_tables,
        render_report,
        write_report,
    )
    from focaltag.experiments.runner import default_label

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected >= 0 resamples, got {args.bootstrap}")
    names = [n for n, _ in args.predictions]
    ca_names = [n for n, _ in args.class_aware]
    dup = next((n for n in names + ca_names if (names + ca_names).count(n) > 1), None)
    if dup:
        raise ConfigError(f"--predictions/--class-aware: the name {dup!r} is given twice; names must be unique")
    gt = _load_matrix(args.ground_truth, "ground truth")
    systems = {n: _load_matrix(p, f"predictions {n!r}") for n, p in args.predictions + args.class_aware}
    tag_names = _tag_names(args.tags, gt)
    thresholds = _thresholds(args.group_thresholds)
    counts, dists = _train_counts(args.train_tsv, tag_names)
    ensembles = {}
    if not args.no_ensemble:
        if len(names) >= 2:
            ensembles["ensemble"] = names
        if len(ca_names) >= 2:
            ensembles["ensemble_class_aware"] = ca_names
    baseline = args.baseline if args.baseline in names else names[0]
    if baseline != args.baseline:
        log.info("no system is named %r; paired tests compare against %r (use --baseline)", args.baseline,
                 baseline)
    ca_systems = ca_names + [e for e in ensembles if e == "ensemble_class_aware"]
    ordered = names + [e for e in ensembles if e == "ensemble"] + ca_systems
    tables = default_tables(ordered, ensembles, baseline=baseline, has_groups=counts is not None,
                            class_aware=ca_systems)
    labels = {n: default_label(n) for n in [*systems, *ensembles]}
    opts = ReportOptions(baseline=baseline, bootstrap=args.bootstrap, seed=args.seed,
                         group_thresholds=thresholds, subset=args.subset, synthetic=args.synthetic,
                         title=f"focaltag report: {args.subset} split", adjust=args.adjust)
    results, preds = build_results(systems, gt, tag_names=tag_names, train_counts=counts, ensembles=ensembles,
                                   tables=tables, labels=labels, options=opts)
    if args.out is not None:
        text = write_report(results, preds, gt, args.out, distributions=dists, figures_on=not args.no_figures)
        print(f"wrote {args.out / 'report.md'}, {args.out / 'results.json'} and "
              f"{len(results['figures'])} figures", file=sys.stderr)
    else:
        text = render_report(results)
    print(text)
    return 0


def _tag_names(path: Path | None, gt: Any) -> list[str]:
    from focaltag.evaluation.metrics import default_tag_names

    if path is None:
        return list(default_tag_names(gt.shape[1] if getattr(gt, "ndim", 0) == 2 else 0))
    from focaltag.data.metadata import read_tag_list

    names = read_tag_list(path)
    if getattr(gt, "ndim", 0) == 2 and len(names) != gt.shape[1]:
        raise ConfigError(f"--tags {path}: {len(names)} tags but the ground truth has {gt.shape[1]} columns")
    return names


def _thresholds(text: str) -> Any:
    if text.strip() == "auto":
        return "auto"
    from focaltag.evaluation.groups import parse_group_thresholds

    return parse_group_thresholds(text)


def _train_counts(paths: list[Path], tag_names: list[str]) -> tuple[Any, Any]:
    if not paths:
        return None, None
    from focaltag.evaluation.groups import count_training_tags

    per_file = [count_training_tags([p], tag_names) for p in paths]
    total = sum(per_file[1:], per_file[0])
    if len(paths) == 1:
        return total, {paths[0].stem: total}
    return total, {paths[0].stem: per_file[0], " + ".join(p.stem for p in paths): total}
