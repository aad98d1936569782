"""One place that decides whether progress bars are shown (tqdm, on stderr, off with --quiet)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", **kwargs: Any) -> Any:
    """tqdm that is silent when logging is above INFO (``--quiet``) or the root logger is unconfigured."""
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = not logging.getLogger().isEnabledFor(logging.INFO)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True,
                leave=False, **kwargs)
