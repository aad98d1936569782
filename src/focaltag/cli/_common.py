"""Helpers every command module uses to declare its parser the same way."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def add_command(
    subparsers: Any, name: str, *, help: str, func: Handler, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a subcommand with the shared ``--quiet/--verbose`` flags and ``func`` as its handler."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    parser.set_defaults(func=func)
    return parser


def add_group(subparsers: Any, name: str, *, help: str) -> Any:
    """Add a command that only holds subcommands (``focaltag data ...``); returns its subparsers."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=type(parser))


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0-based shard I of N) for argparse."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard I/N needs 0 <= I < N, got {text!r}")
    return i, n
