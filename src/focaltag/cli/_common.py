"""Helpers every command module uses to declare its parser the same way."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Show ``(default: X)`` only where X is a real value the option takes when it is not given.

    argparse's ArgumentDefaultsHelpFormatter prints "(default: None)" on required options and
    "(default: False)" on flags, which tells the reader nothing. A description or epilog written with line
    breaks (examples) keeps them; one-paragraph text is wrapped to the terminal.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or action.required or not action.option_strings
                or default is None or default is argparse.SUPPRESS or isinstance(default, bool)
                or default == [] or default == ()
                or isinstance(action, (argparse._StoreConstAction, argparse._CountAction))):
            return action.help
        shown = ",".join(str(v) for v in default) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def add_command(
    subparsers: Any, name: str, *, help: str, func: Handler, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a subcommand with the shared ``--quiet/--verbose`` flags and ``func`` as its handler."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    parser.set_defaults(func=func)
    return parser


def add_group(subparsers: Any, name: str, *, help: str) -> Any:
    """Add a command that only holds subcommands (``focaltag data ...``); returns its subparsers."""
    parser = subparsers.add_parser(name, help=help, description=help, formatter_class=DefaultsHelpFormatter)
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


def is_main_process() -> bool:
    """False on the other ranks of a ``torchrun`` job (RANK > 0): only rank 0 prints a command's result."""
    return os.environ.get("RANK", "").strip() in ("", "0")


def thresholds_option(value: str | os.PathLike[str] | None) -> str | None:
    """``--thresholds`` of tag and serve: not given -> ``"auto"`` (a catalogue model's own thresholds, else none),
    ``none`` -> None (no decisions), anything else -> the thresholds file. Tagger's ``thresholds`` takes the result.
    """
    if value is None:
        return "auto"
    text = os.fspath(value)
    return None if text.lower() == "none" else text
