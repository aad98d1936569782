"""``focaltag config list|show``: the configs installed with the package, to use by name or copy and edit.

After ``pip install focaltag`` there is no ``configs/`` folder; ``focaltag train --config paper`` and
``focaltag experiment run genre`` use the shipped files by name, and ``focaltag config show train/paper >
my.yaml`` gives a copy to edit (then ``--config my.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from focaltag.cli._common import add_command, add_group


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "config", help="list or print the shipped training and experiment configs")
    lst = add_command(sub, "list", func=_list, help="list the shipped configs (KIND/NAME) with their first line",
                      description="List the configs installed with focaltag. Use them by name "
                      "(focaltag train --config paper, focaltag experiment run genre) or print one with "
                      "focaltag config show KIND/NAME to copy and edit.")
    lst.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    show = add_command(sub, "show", func=_show, help="print a shipped config (YAML) to copy and edit",
                       description="Print a shipped config, e.g. focaltag config show train/paper > my.yaml.")
    show.add_argument("name", metavar="KIND/NAME", help="e.g. train/paper, train/demo, experiments/genre")
    show.add_argument("--path", action="store_true", help="print the installed file's path instead of its text")


def _summary(text: str) -> str:
    """The first comment line of a config file, as its one-line description."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def _list(args: argparse.Namespace) -> int:
    from focaltag.config import shipped_config_path, shipped_configs

    items = {f"{kind}/{name}": _summary(shipped_config_path(kind, name).read_text(encoding="utf-8"))
             for kind, names in shipped_configs().items() for name in names}
    if args.json:
        json.dump(items, sys.stdout)
        sys.stdout.write("\n")
        return 0
    width = max(len(k) for k in items)
    for key, line in items.items():
        print(f"{key:<{width}}  {line}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from focaltag.config import CONFIG_KINDS, shipped_config_path, shipped_configs
    from focaltag.errors import ConfigError

    kind, sep, name = args.name.partition("/")
    if not sep:  # a bare name is fine when exactly one kind has it
        owners = [k for k, names in shipped_configs().items() if args.name in names]
        if len(owners) != 1:
            where = f"both {' and '.join(f'{k}/{args.name}' for k in owners)} exist" if owners else "no such name"
            raise ConfigError(f"config show {args.name!r}: give KIND/NAME with KIND one of "
                              f"{', '.join(CONFIG_KINDS)} ({where}; see `focaltag config list`)")
        kind, name = owners[0], args.name
    path = shipped_config_path(kind, name.removesuffix(".yaml"))
    if args.path:
        print(path)
    else:
        sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0
