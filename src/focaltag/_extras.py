"""Optional extras (``pip install 'focaltag[NAME]'``): one check that turns a missing package into one line."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from focaltag.errors import ConfigError

__all__ = ["install_hint", "require_extra"]


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'focaltag[{extra}]'"


def require_extra(extra: str, modules: Sequence[str], *, what: str) -> None:
    """Raise a one-line ConfigError naming what ``what`` needs and the pip command, unless every module imports.

    The modules are imported (not only looked up): a package that is present but broken counts as missing.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(f"{what} needs {name.replace('_', '-')}, which is not installed; "
                              f"{install_hint(extra)}") from None
