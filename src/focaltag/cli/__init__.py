"""Thin command-line layer over the library API: ``focaltag <command> ...``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from focaltag._version import __version__
from focaltag.errors import FocaltagError

__all__ = ["main", "build_parser"]

# Each module exposes ``register(subparsers)``; a module that is not present is simply not offered.
COMMAND_MODULES: tuple[str, ...] = (
    "focaltag.cli.demo",
    "focaltag.cli.data",
    "focaltag.cli.evaluate",
    "focaltag.cli.train",
    "focaltag.cli.tag",
    "focaltag.cli.experiment",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="focaltag",
        description="Train, evaluate, ensemble and serve imbalance-robust multi-label music taggers.",
    )
    parser.add_argument("--version", action="version", version=f"focaltag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 some items failed, 2 usage/input error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _configure_logging(args)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return int(args.func(args) or 0)
    except FocaltagError as err:
        print(f"focaltag: error: {err}", file=sys.stderr)
        return err.exit_code
    except FileNotFoundError as err:
        print(f"focaltag: error: file not found: {err.filename or err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"focaltag: error: permission denied: {err.filename or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("focaltag: interrupted; finished work is kept, rerun the same command to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
