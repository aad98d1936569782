"""``focaltag head train | eval``: your own tags, learnt from your labels on top of a tagger's embeddings."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, add_group

_LABELS_HELP = ("CSV of your tracks: a 'path' column and either a 'tags' column (tags separated by ';'; a path may "
                "repeat, its tags are joined) or one 0/1 column per tag; relative paths are relative to the file; "
                ".tsv files are tab-separated")


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "head", help="your own tags: train a small head on your labels, score it")
    p = add_command(sub, "train", func=run_train, help="train a head for your tags on a tagger's embeddings",
                    description="Extract each labelled track's embedding with the base model once (cached in "
                    "OUT/work, resumable) or read it from a library run (--library), cross-validate a linear "
                    "or one-hidden-layer head with the chosen loss and sampling, report out-of-fold PR-AUC and "
                    "ROC-AUC with bootstrap intervals next to BCE on the same folds, choose per-tag thresholds on "
                    "the out-of-fold predictions (probability > threshold), train the final head on every track "
                    "and write OUT: a model folder (base + head, card.json, thresholds.tsv) usable wherever a "
                    "model is accepted (tag, library runs, serve, beets, predict, export).")
    p.add_argument("--labels", type=Path, required=True, metavar="LABELS.csv", help=_LABELS_HELP)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the head model folder to write")
    p.add_argument("--base", default=None, metavar="M",
                   help="the model whose embeddings the head reads: catalogue name, checkpoint, run or ensemble "
                   "folder (default: the --library's model, else usc-sail-2020)")
    p.add_argument("--loss", default="focal", choices=("bce", "focal", "cb-focal", "db-focal"),
                   help="the head's training loss (the paper's four)")
    p.add_argument("--sampling", default="standard", choices=("standard", "class-aware"),
                   help="batches of shuffled tracks, or the paper's class-aware sampling")
    p.add_argument("--folds", type=int, default=5, metavar="K",
                   help="cross-validation folds; every tag needs at least K positive tracks")
    p.add_argument("--head", default="auto", choices=("auto", "linear", "hidden"),
                   help="auto: cross-validation chooses between a linear head and one hidden layer")
    p.add_argument("--hidden-size", type=int, default=256, metavar="N", help="units of the hidden layer")
    p.add_argument("--library", type=Path, default=None, metavar="TAGS.jsonl",
                   help="reuse the embeddings stored by 'focaltag tag DIR -o TAGS.jsonl --embeddings' (tracks not "
                   "in it are extracted with the base)")
    p.add_argument("--skip-missing", action="store_true",
                   help="train on the tracks whose files exist and decode, leaving out (and listing) the others")
    p.add_argument("--overwrite", action="store_true", help="replace the head already in --out")
    p.add_argument("--seed", type=int, default=0, help="fixes the folds, the initial weights and the batch order")
    p.add_argument("--steps", type=int, default=400, metavar="N", help="optimizer steps per head fit")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples of the intervals")
    p.add_argument("--device", default="cpu", help="torch device of the base model (cpu, cuda, auto)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="decoding threads")
    p.add_argument("--json", action="store_true", help="print the cross-validation report as JSON")

    p = add_command(sub, "eval", func=run_eval, help="score a head (or any model) on a held-out labelled set",
                    description="Tag every labelled file with the model as it tags (16 evenly spaced chunks, its "
                    "own thresholds) and print macro and per-tag PR-AUC / ROC-AUC with bootstrap intervals, and "
                    "precision / recall / F-score of its decisions.")
    p.add_argument("--labels", type=Path, required=True, metavar="TEST.csv", help=_LABELS_HELP)
    p.add_argument("-m", "--model", required=True, metavar="M", help="a head folder (or any model)")
    p.add_argument("--skip-missing", action="store_true", help="score the files that exist and decode")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples of the intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--chunks", type=int, default=16, metavar="N", help="evenly spaced chunks per track")
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16", "int8"),
                   help="as in 'focaltag tag'; fp32 scores exactly")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="decoding threads")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")


def _options(args: argparse.Namespace) -> Any:
    from focaltag.errors import ConfigError
    from focaltag.training.head import HeadOptions

    if args.hidden_size < 1:
        raise ConfigError(f"--hidden-size must be >= 1, got {args.hidden_size}")
    sizes = {"auto": (0, args.hidden_size), "linear": (0,), "hidden": (args.hidden_size,)}[args.head]
    return HeadOptions(loss=args.loss, sampling=args.sampling, folds=args.folds, seed=args.seed, steps=args.steps,
                       hidden_sizes=sizes)


def run_train(args: argparse.Namespace) -> int:
    from focaltag.inference import configure_runtime
    from focaltag.library.heads import train_head
    from focaltag.models.head import read_card

    options = _options(args)
    configure_runtime(decode_threads=args.workers)
    train_head(args.labels, args.out, base=args.base, library=args.library, options=options,
               skip_missing=args.skip_missing, overwrite=args.overwrite, bootstrap=args.bootstrap,
               device=args.device, workers=args.workers)
    card = read_card(args.out)
    if args.json:
        print(json.dumps(card, indent=2, ensure_ascii=False))
    else:
        print(card_text(card))
    print(f"focaltag: wrote {args.out} (best.pt: {card['base']['model']} + head; card.json; thresholds.tsv); tag "
          f"with 'focaltag tag FILES --model {args.out}'", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from focaltag.inference import configure_runtime
    from focaltag.library.heads import evaluate_head

    configure_runtime(decode_threads=args.workers)
    result = evaluate_head(args.labels, args.model, skip_missing=args.skip_missing, bootstrap=args.bootstrap,
                           seed=args.seed, precision=args.precision, n_chunks=args.chunks, device=args.device,
                           workers=args.workers)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"{result['model']} on {result['tracks']} tracks of {result['labels']}")
    print(_metrics_lines(result, None))
    return 0


# --------------------------------------------------------------------------------------------- text


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _ci(point: Any, interval: Sequence[Any] | None) -> str:
    if interval is None or point is None or interval[0] is None:
        return _num(point)
    return f"{_num(point)} [{_num(interval[0])}, {_num(interval[1])}]"


def _macro(metrics: Mapping[str, Any], name: str) -> str:
    intervals = metrics.get("ci", {}).get("intervals", {})
    return _ci(metrics.get(name), intervals.get(name))


def _metrics_lines(metrics: Mapping[str, Any], thresholds: Mapping[str, float] | None) -> str:
    """Macro scores with intervals, then one row per tag (positives, PR-AUC, ROC-AUC [, threshold])."""
    lines = [f"  macro PR-AUC  {_macro(metrics, 'PR-AUC-macro')}",
             f"  macro ROC-AUC {_macro(metrics, 'ROC-AUC-macro')}"]
    if "F-score-macro" in metrics:
        lines.append(f"  decisions     F-score macro {_macro(metrics, 'F-score-macro')}, precision "
                     f"{_num(metrics.get('precision-macro'))}, recall {_num(metrics.get('recall-macro'))}")
    per_tag = metrics.get("per_tag", {})
    width = max([len(t) for t in per_tag] + [3])
    head = f"  {'tag':<{width}}  {'tracks':>6}  {'PR-AUC':<21}  {'ROC-AUC':<21}"
    lines.append(head + ("  threshold" if thresholds is not None else ""))
    for tag, row in per_tag.items():
        line = (f"  {tag:<{width}}  {row['positives']:>6}  {_ci(row['PR-AUC'], row.get('PR-AUC-ci')):<21}  "
                f"{_ci(row['ROC-AUC'], row.get('ROC-AUC-ci')):<21}")
        if thresholds is not None:
            line += f"  {thresholds[tag]:.4f}"
        lines.append(line)
    return "\n".join(lines)


def card_text(card: Mapping[str, Any]) -> str:
    """A head's model card as text: base, labels, the chosen head, cross-validated scores and the BCE comparison."""
    cv = card["cross_validation"]
    head = cv["head"]
    candidates = ", ".join(f"{k} {_num(v)}" for k, v in head["candidates"].items())
    loss = cv["loss"].replace("_", "-")
    lines = [
        f"{card.get('name', 'head')}: your tags on {card['base']['model']} "
        f"({card['base']['embedding_size']}-value embeddings), created {card.get('created', '?')}",
        f"  labels:   {card['labels']['file']} ({card['labels']['tracks']} tracks, {len(card['tags'])} tags"
        + (f"; {card['labels']['skipped_missing']} missing skipped" if card["labels"].get("skipped_missing") else "")
        + ")",
        f"  training: {loss} loss, {cv['sampling']} sampling, {cv['folds']}-fold cross-validation, seed "
        f"{cv['seed']}",
        f"  head:     {head['kind']} (out-of-fold macro PR-AUC: {candidates})",
        f"out-of-fold scores ({loss}, {cv['sampling']} sampling; 95% bootstrap intervals; F-score in-sample: its "
        "thresholds were chosen on these predictions):",
        _metrics_lines(cv["metrics"], card.get("thresholds")),
    ]
    if (cv["loss"], cv["sampling"]) != ("bce", "standard"):
        cmp = cv["comparison_with_bce"]
        base = cv["bce"]["metrics"]
        lines.append(f"the same folds with bce, standard sampling: macro PR-AUC {_macro(base, 'PR-AUC-macro')}, "
                     f"ROC-AUC {_macro(base, 'ROC-AUC-macro')}")
        for name in ("PR-AUC-macro", "ROC-AUC-macro"):
            d = cmp[name]
            lines.append(f"  {loss} - bce {name}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], "
                         f"p = {d['p_value']:.3g}")
    return "\n".join(lines)
