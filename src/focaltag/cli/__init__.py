"""Thin command-line layer over the library API: ``focaltag <command> ...``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from focaltag._version import __version__
from focaltag.errors import FocaltagError, first_line

__all__ = ["main", "build_parser"]

# Each module exposes ``register(subparsers)``; a module that is not present is simply not offered.
COMMAND_MODULES: tuple[str, ...] = (
    "focaltag.cli.demo",
    "focaltag.cli.data",
    "focaltag.cli.evaluate",
    "focaltag.cli.train",
    "focaltag.cli.tag",
    "focaltag.cli.models",
    "focaltag.cli.head",
    "focaltag.cli.library",
    "focaltag.cli.similar",
    "focaltag.cli.playlist",
    "focaltag.cli.experiment",
    "focaltag.cli.serve",
    "focaltag.cli.config",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse drops write errors (help into a full disk would exit 0 having written nothing)
        if message:
            (file or sys.stderr).write(message)


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


# errno values that mean "the path you gave cannot be used" (bad input, exit 2); any other OSError (disk full,
# I/O error, ...) is a failure while running (exit 1)
_BAD_PATH_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                              errno.ENAMETOOLONG, errno.EEXIST, errno.ELOOP})
DETAILS_HINT = "run with -v for details"


def _is_cuda_oom(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _silence_stdout(*, only_if_broken: bool = False) -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of a broken stdout cannot fail again."""
    if only_if_broken:
        try:
            sys.stdout.flush()
            return
        except (OSError, ValueError):
            pass
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def describe_error(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an exception that reached the top of a command.

    2 = bad input (a FocaltagError by default, a path that cannot be read or written), 1 = a failure while
    running (disk full, out of memory, an unexpected error).
    """
    if isinstance(err, FocaltagError):
        return str(err), err.exit_code
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)):
        return "out of memory; lower --batch-size (or --chunks / --workers) and try again", 1
    if _is_cuda_oom(err):
        return "CUDA out of memory; lower --batch-size (or use a smaller model / --device cpu) and try again", 1
    if isinstance(err, OSError):
        where = err.filename if err.filename is not None else "the output"
        reason = err.strerror or first_line(err, limit=300)
        if err.filename is None and err.errno != errno.ENOSPC:
            return f"{reason} ({type(err).__name__}; {DETAILS_HINT})", 1 if err.errno not in _BAD_PATH_ERRNOS else 2
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}: {reason}; pick a path this user can read (inputs) or write (outputs)", 2
        if err.errno in _BAD_PATH_ERRNOS:
            return f"{where}: {reason}; check the path", 2
        if err.errno == errno.ENOSPC:
            return f"cannot write {where}: {reason}; free some disk space or write elsewhere", 1
        return f"{where}: {reason}", 1
    return f"unexpected {type(err).__name__}: {first_line(err, limit=300)} ({DETAILS_HINT})", 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 a failure while running, 2 usage/input error).

    This is the one place where exceptions become messages: every error is one line on stderr; ``-v`` adds the
    traceback of unexpected ones.
    """
    args_list = list(argv) if argv is not None else sys.argv[1:]
    verbose = any(a in ("-v", "--verbose") for a in args_list)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit:
            sys.stdout.flush()  # --help / --version into a full disk: one line below, not a shutdown error
            raise
        if not getattr(args, "func", None):
            parser.print_help()
            sys.stdout.flush()
            return 2
        _configure_logging(args)
        verbose = bool(getattr(args, "verbose", False))
        from focaltag import _resources

        if _resources.started_with_tunables():
            logging.getLogger(__name__).debug("started with glibc malloc tunables: %s", _resources.GLIBC_MALLOC_TUNABLES)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a full disk behind stdout (> /dev/full) fails here, inside the handler
        return code
    except KeyboardInterrupt:
        print("focaltag: interrupted; finished work is kept, rerun the same command to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `focaltag ... | head`: the reader left, which is not an error
        _silence_stdout()
        return 0
    except Exception as err:
        message, code = describe_error(err)
        if isinstance(err, OSError):
            _silence_stdout(only_if_broken=True)  # stdout itself may be the full disk; never fail again at exit
        if verbose and not isinstance(err, FocaltagError):
            traceback.print_exc(file=sys.stderr)
        print(f"focaltag: error: {message}", file=sys.stderr)
        return code


NETWORK_COMMANDS = frozenset({"tag", "predict", "train", "serve", "demo", "experiment", "export", "head"})
"""Commands that run a network: the console script starts them with glibc's malloc tunables
(:func:`focaltag._resources.tunables_environment`)."""


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def console() -> None:
    """The ``focaltag`` console script and ``python -m focaltag``.

    A command that runs a network re-executes this process once, before anything heavy is imported, with glibc's
    malloc tunables set (Linux with glibc, and only when the user set no allocator variables), so large activation
    buffers stay in the process: glibc reads them only at start, and ``mallopt`` cannot go past 32 MiB.
    """
    argv = sys.argv[1:]
    if _command_of(argv) in NETWORK_COMMANDS:
        from focaltag._resources import tunables_environment

        env = tunables_environment(dict(os.environ))
        if env is not None:
            with contextlib.suppress(OSError):  # cannot exec: run as it is
                sys.stdout.flush()
                os.execve(sys.executable, [sys.executable, "-m", "focaltag", *argv], env)
    from focaltag._resources import started_with_tunables

    started_with_tunables()  # the re-executed process: the user's own environment again for child processes
    raise SystemExit(main())

