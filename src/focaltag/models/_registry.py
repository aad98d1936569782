"""Model registry: architectures register a factory by name so configs, checkpoints and the CLI can refer to them."""

from __future__ import annotations

import difflib
import fnmatch
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from focaltag.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["register_model", "list_models", "is_model", "model_entrypoint"]

F = TypeVar("F", bound=Callable[..., Any])

_ENTRYPOINTS: dict[str, Callable[..., Any]] = {}
_MODULES: dict[str, str] = {}


def register_model(fn: F) -> F:
    """Record ``fn`` as the factory for the model named ``fn.__name__`` and add it to its module's ``__all__``."""
    name = fn.__name__
    if name in _ENTRYPOINTS and _ENTRYPOINTS[name] is not fn:
        logger.warning("model %r registered twice (%s and %s); the later one wins",
                       name, _MODULES[name], fn.__module__)
    _ENTRYPOINTS[name] = fn
    _MODULES[name] = fn.__module__
    module = sys.modules.get(fn.__module__)
    if module is not None:
        exported = getattr(module, "__all__", None)
        if isinstance(exported, list) and name not in exported:
            exported.append(name)
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style wildcard (``"short_*"``)."""
    names = sorted(_ENTRYPOINTS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _ENTRYPOINTS


def model_entrypoint(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; an unknown name is a ModelError suggesting the closest names."""
    try:
        return _ENTRYPOINTS[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name), list(_ENTRYPOINTS), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ModelError(f"unknown model {name!r}: {hint}available models: {', '.join(list_models()) or 'none'}")
