"""``focaltag train``: run the paper's training recipe from a YAML config into a run directory."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, is_main_process
from focaltag.errors import ConfigError

log = logging.getLogger(__name__)

EPILOG = """examples:
  focaltag train --config paper --out runs/bce
  focaltag train --config paper --set loss.name=focal --set optim.adam_lr=1e-4 --out runs/focal
  focaltag train --out runs/bce --resume
  torchrun --nproc-per-node 4 -m focaltag train --config paper --out runs/bce
"""


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "train", help="train a tagger (Adam -> SGD recipe, validation every epoch)",
                         func=run)
    parser.epilog = EPILOG
    parser.add_argument("--config", default=None, metavar="NAME|FILE",
                        help="a shipped config by name (paper, demo: `focaltag config list`) or a YAML file (a path "
                        "with '/' or ending .yaml); with --resume defaults to RUN_DIR/config.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.epochs=10 (repeatable)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                        help="run directory: config.yaml, metrics.jsonl, tensorboard/, best.pt, last.pt")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR exactly where last.pt left it")
    parser.add_argument("--init-from", default=None, metavar="CKPT",
                        help="start from the name- and shape-matching weights of CKPT (e.g. MSD-pretrained)")
    parser.add_argument("--select-by", choices=("pr_auc", "loss"), default=None,
                        help="keep best.pt by validation macro PR-AUC (default) or by validation loss (the paper's "
                             "wording)")


def run(args: argparse.Namespace) -> int:
    from focaltag.config import resolve_config
    from focaltag.training.config import load_train_config
    from focaltag.training.loop import train

    config_path = resolve_config(args.config, "train") if args.config is not None else None
    if config_path is None:
        if not args.resume:
            raise ConfigError("--config FILE is required (only --resume can reuse RUN_DIR/config.yaml)")
        config_path = args.out / "config.yaml"
        if not config_path.is_file():
            raise ConfigError(f"--resume without --config needs {config_path}; pass --config FILE")
    overrides = list(args.overrides)
    if args.init_from is not None:
        overrides.append(f"model.init_from={args.init_from}")
    if args.select_by is not None:
        overrides.append(f"validation.select_by={args.select_by}")
    config = load_train_config(config_path, overrides)
    summary = train(config, args.out, resume=args.resume)
    if summary.get("stopped"):
        log.info("stopped after %d steps (runtime.max_steps); continue with --resume", summary["steps"])
    best = summary.get("best")
    if best is not None:
        log.info("best epoch %s: validation %s %.4f; model: %s", summary["best_epoch"], summary["select_by"],
                 best, args.out / "best.pt")
    report = {k: summary[k] for k in ("run_dir", "epochs_completed", "steps", "best_epoch", "select_by", "best",
                                      "stopped")}
    if "init_from" in summary:
        init = summary["init_from"]
        report["init_from"] = {"path": init["path"], "loaded": init["loaded"], "skipped": len(init["skipped"])}
    if is_main_process():  # under torchrun every rank returns the summary; print it once
        print(json.dumps(report))
    return 0
