"""``focaltag models list | info NAME | pull NAME... | path NAME | import NAME FILE...``: the model catalogue."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, add_group

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "models", help="published pretrained models: list, info, pull, path, import")
    p = add_command(sub, "list", func=run_list, help="the catalogue of published checkpoints",
                    description="Every catalogue model with its data, licence and published metrics; a name "
                    "works wherever a model is accepted (tag, predict, export, --init-from, load_model).")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p = add_command(sub, "info", func=run_info, help="the model card of one catalogue model (or of a head)",
                    description="Source (repository, commit, path, git blob id), licence, citation, training "
                    "data, front end, input length, tags, published metrics, decision thresholds, cache state. "
                    "For a head folder of 'focaltag head train' (or a name it was imported under): its card.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print one JSON object (with \"thresholds\")")
    p = add_command(sub, "pull", func=run_pull, help="download, verify, convert and cache catalogue models",
                    description="Fetch each model from its pinned commit (resumable, retried), check its git blob "
                    "SHA-1 before anything is cached, convert it to a focaltag checkpoint and cache it under "
                    "<cache>/models/NAME (cache: $FOCALTAG_CACHE_DIR, else $XDG_CACHE_HOME/focaltag). Pulling "
                    "again does nothing.")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--mirror", default=None, metavar="URL",
                   help="serve files from URL/<owner>/<repo>/<commit>/<path> instead of "
                   "raw.githubusercontent.com (default: $FOCALTAG_MODEL_MIRROR)")
    p.add_argument("--retries", type=int, default=3, metavar="N", help="retries of a dropped connection")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds a file may take in all, and without data (default: 60 s without data, 60 s + 1 s "
                   "per 100 kB of the file in all)")
    p = add_command(sub, "path", func=run_path, help="print the cache folder of a catalogue model",
                    description="The folder holding the converted model (best.pt; for an ensemble, ensemble.json "
                    "and its members), usable as --model.")
    p.add_argument("name", metavar="NAME")
    p = add_command(sub, "import", func=run_import,
                    help="cache catalogue model files obtained elsewhere (checked against the pins)",
                    description="Check each FILE against the catalogue's git blob SHA-1 (one file per member, in "
                    "member order, for an ensemble), then convert and cache it exactly as 'pull' does. Given a "
                    "head folder of 'focaltag head train' instead, cache it as NAME, usable as --model NAME.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")


def _short_licence(licence: str) -> str:
    return "none stated" if licence.startswith("none") else licence.split(" (")[0]


def _num(value: float) -> str:
    """0.15 -> 0.150, 0.3280 -> 0.328, 0.2951 -> 0.2951: as many decimals as the source gives (3 or 4)."""
    return f"{value:.3f}" if round(value, 3) == value else f"{value:.4f}"


def _metrics_text(metrics: dict[str, Any]) -> str:
    parts = [f"{k} {_num(metrics[k])}" for k in ("PR-AUC", "ROC-AUC") if k in metrics]
    return " / ".join(parts) if parts else "-"


def run_list(args: argparse.Namespace) -> int:
    from focaltag.models.catalogue import catalogue
    from focaltag.models.hub import is_pulled

    entries = list(catalogue().values())
    if args.json:
        rows = []
        for e in entries:
            d = e.to_dict()
            d.pop("thresholds", None)
            d.pop("tag_names")
            rows.append({**d, "n_tags": len(e.tag_names), "pulled": is_pulled(e.name)})
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    width = max(len(e.name) for e in entries)
    print(f"{'NAME':<{width}}  {'ARCHITECTURE':<18}  {'TAGS':>4}  {'LICENCE':<11}  {'TEST PR-AUC / ROC-AUC':<28}  "
          "PULLED")
    for e in entries:
        arch = f"ensemble of {len(e.members)}" if e.kind == "ensemble" else (e.architecture or {}).get("name", "?")
        print(f"{e.name:<{width}}  {arch:<18}  {len(e.tag_names):>4}  {_short_licence(e.licence):<11}  "
              f"{_metrics_text(dict(e.metrics)):<28}  {'yes' if is_pulled(e.name) else 'no'}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from focaltag.models.catalogue import get_entry
    from focaltag.models.hub import is_pulled, model_dir

    head = _head_folder(args.name)
    if head is not None:  # a head of 'focaltag head train' (a folder, or a name it was imported under)
        from focaltag.cli.head import card_text
        from focaltag.models.head import read_card

        card = read_card(head)
        print(json.dumps(card, indent=2, ensure_ascii=False) if args.json else card_text(card))
        return 0
    entry = get_entry(args.name)
    card = entry.to_dict()
    card["cache"] = {"path": str(model_dir(entry.name)), "pulled": is_pulled(entry.name)}
    if args.json:
        print(json.dumps(card, indent=2, ensure_ascii=False))
        return 0
    lines = [f"{entry.name}: {entry.description}"]
    if entry.kind == "ensemble":
        lines.append(f"  members:        {', '.join(entry.members)} (mean of their probabilities)")
        lines.append(f"  source:         {entry.repo} at commit {entry.commit}")
    else:
        arch = entry.architecture or {}
        args_text = ", ".join(f"{k}={v}" for k, v in arch.get("args", {}).items())
        lines.append(f"  architecture:   {arch.get('name')} ({args_text})")
        size = f", {entry.size:,} bytes" if entry.size is not None else ""
        lines.append(f"  source:         {entry.repo}@{entry.commit}:{entry.path}")
        lines.append(f"  git blob SHA-1: {entry.blob}{size}")
    licence = entry.licence
    if licence.startswith("none"):
        licence = f"{entry.repo} states no licence: {licence.split(': ', 1)[-1]}"
    lines.append(f"  licence:        {licence}")
    lines.append(f"  citation:       {entry.citation}")
    lines.append(f"  training data:  {entry.training_data}")
    fe = entry.front_end
    lines.append(f"  front end:      {fe['sample_rate']} Hz mono, {fe['n_mels']}-band mel (n_fft {fe['n_fft']}, hop "
                 f"{fe['hop_length']}, {fe['f_min']:g}-{fe['f_max']:g} Hz), dB, BatchNorm")
    lines.append(f"  input:          {entry.input['samples']:,} samples ({entry.input['seconds']} s) per chunk")
    metrics = dict(entry.metrics)
    lines.append(f"  published:      {_metrics_text(metrics)} on {metrics.get('split', '?')} "
                 f"({metrics.get('source', '?')})")
    if entry.thresholds is not None:
        info = dict(entry.thresholds_info or {})
        text = (f"per-tag thresholds chosen on the authors' validation predictions; a tag is on when "
                f"probability > threshold (the official MediaEval rule); in-sample validation F-score macro "
                f"{info.get('validation_f_macro')}, micro {info.get('validation_f_micro')}")
        if "test_f_macro" in info:
            text += f"; the authors' test split gives macro {info['test_f_macro']}"
        lines.append(f"  decisions:      {text}")
    lines.append(f"  tags ({len(entry.tag_names)}):      {', '.join(entry.tag_names)}")
    state = "pulled" if card["cache"]["pulled"] else f"not pulled ('focaltag models pull {entry.name}')"
    lines.append(f"  cache:          {card['cache']['path']} ({state})")
    print("\n".join(lines))
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError
    from focaltag.models.catalogue import get_entry
    from focaltag.models.hub import is_pulled, model_dir, pull

    if args.retries < 0:
        raise ConfigError(f"models pull: --retries must be >= 0, got {args.retries}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"models pull: --timeout must be > 0 seconds, got {args.timeout}")
    from focaltag.data._http import cli_timeouts

    timeout, deadline = cli_timeouts(args.timeout)
    entries = [get_entry(n) for n in args.names]  # every name checked before anything is fetched
    for entry in entries:
        had = is_pulled(entry.name)
        pull(entry.name, mirror=args.mirror, retries=args.retries, timeout=timeout, deadline=deadline)
        folder = model_dir(entry.name)
        logger.info("%s: %s %s", entry.name, "already cached in" if had else "verified and cached in", folder)
        _prepare_runtime(entry.name)
        print(folder)
    return 0


def _prepare_runtime(name: str) -> None:
    """Load the model once as ``tag`` would on this CPU, so what its default runtime needs (an ONNX graph, an int8
    model) is exported and cached now, ahead of the first ``focaltag tag``, not during it."""
    from focaltag.inference import InferenceOptions, Predictor
    from focaltag.models.resolve import resolve_model

    predictor = Predictor.load(resolve_model(name), InferenceOptions())
    logger.info("%s: runs in %s through %s on this CPU", name, predictor.precision, predictor.engine)


def run_path(args: argparse.Namespace) -> int:
    from focaltag.models.hub import is_pulled, model_dir

    folder = model_dir(args.name)
    if not is_pulled(args.name):
        print(f"focaltag: note: {args.name} is not pulled yet; run 'focaltag models pull {args.name}'",
              file=sys.stderr)
    print(folder)
    return 0


def _head_folder(name: str) -> Path | None:
    from focaltag.models.head import head_folder_of, imported_head

    return head_folder_of(name) if Path(name).exists() else imported_head(name)


def run_import(args: argparse.Namespace) -> int:
    from focaltag.models.hub import import_files, model_dir

    if len(args.files) == 1 and _head_folder(str(args.files[0])) is not None:  # a head: usable as --model NAME
        from focaltag.models.head import import_head

        print(import_head(args.name, args.files[0]))
        return 0
    import_files(args.name, [Path(f) for f in args.files])
    folder = model_dir(args.name)
    logger.info("%s: verified and cached in %s", args.name, folder)
    _prepare_runtime(args.name)
    print(folder)
    return 0
