"""Head / middle / tail tag groups by training count: the one definition every stage uses.

The paper splits the 56 mood/theme tags by their number of training tracks (split-0 train plus the authors'
Music4All list) into head (more than ``HEAD_ABOVE`` tracks), middle and tail (at most ``TAIL_AT_MOST``), which
gives 14 / 27 / 15 tags. Dataset statistics (``focaltag data stats``), evaluation (``focaltag evaluate
--train-tsv``) and the experiment report's tables and figures all group with the functions here, so the rule
and its thresholds live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from focaltag.errors import ConfigError, EvaluationError

__all__ = [
    "HEAD_ABOVE",
    "TAIL_AT_MOST",
    "DEFAULT_GROUP_THRESHOLDS",
    "GROUP_NAMES",
    "parse_group_thresholds",
    "format_group_thresholds",
    "group_of",
    "group_labels",
    "frequency_groups",
    "group_rules",
    "middle_range",
    "auto_group_thresholds",
]

HEAD_ABOVE = 550  # head: more training tracks than this (the paper)
TAIL_AT_MOST = 200  # tail: at most this many training tracks (the paper)
DEFAULT_GROUP_THRESHOLDS: tuple[int, int] = (HEAD_ABOVE, TAIL_AT_MOST)
GROUP_NAMES: tuple[str, str, str] = ("head", "middle", "tail")
# the paper's group sizes (14 head and 15 tail of 56 tags), kept by auto_group_thresholds on other datasets
_PAPER_HEAD_SHARE, _PAPER_TAIL_SHARE = 14 / 56, 15 / 56


def format_group_thresholds(thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS) -> str:
    """(head, tail) -> ``"HEAD,TAIL"``, the command-line spelling."""
    head, tail = thresholds
    return f"{int(head)},{int(tail)}"


def parse_group_thresholds(text: str | Sequence[int]) -> tuple[int, int]:
    """``"HEAD,TAIL"`` or a pair -> (head, tail): head above the first, tail at or below the second."""
    example = format_group_thresholds()
    try:
        parts = [int(p) for p in text.split(",")] if isinstance(text, str) else [int(p) for p in text]
    except (TypeError, ValueError):
        raise ConfigError(f"group thresholds must be two integers HEAD,TAIL like {example}, got {text!r}") from None
    if len(parts) != 2:
        raise ConfigError(f"group thresholds must be two integers HEAD,TAIL like {example}, got {text!r}")
    head, tail = parts
    if not head > tail >= 0:
        raise ConfigError(f"group thresholds need HEAD > TAIL >= 0 (head: count > HEAD, tail: count <= TAIL), "
                          f"got {head},{tail}")
    return head, tail


def group_of(count: int, thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS) -> str:
    """``"head"`` (count > HEAD), ``"middle"`` (TAIL < count <= HEAD) or ``"tail"`` (count <= TAIL)."""
    head, tail = thresholds
    return "head" if count > head else "tail" if count <= tail else "middle"


def group_labels(counts: Sequence[int] | np.ndarray,
                 thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS) -> list[str]:
    """The group of every count, in the given order (the paper's Table II rule)."""
    head, tail = parse_group_thresholds(thresholds)
    return [group_of(c, (head, tail)) for c in np.asarray(counts).tolist()]


def frequency_groups(train_counts: Sequence[int] | np.ndarray, tag_names: Sequence[str], *,
                     thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS) -> dict[str, list[str]]:
    """Head, middle and tail tag lists, each in the order of ``tag_names``."""
    counts = np.asarray(train_counts)
    if counts.shape != (len(tag_names),):
        raise EvaluationError(f"train_counts must have one count per tag ({len(tag_names)}), got shape "
                              f"{counts.shape}")
    labels = group_labels(counts, thresholds)
    return {g: [t for t, label in zip(tag_names, labels, strict=True) if label == g] for g in GROUP_NAMES}


def middle_range(head: int, tail: int) -> str:
    """Train counts of the middle group as text: ``TAIL+1-HEAD``, or one number when it is a single value."""
    return f"{tail + 1}" if head == tail + 1 else f"{tail + 1}-{head}"


def group_rules(thresholds: Sequence[int] = DEFAULT_GROUP_THRESHOLDS) -> dict[str, str]:
    """Each group's rule as text, e.g. ``{"head": "train count > HEAD", ...}``."""
    head, tail = parse_group_thresholds(thresholds)
    return {"head": f"train count > {head}", "middle": f"{tail} < train count <= {head}",
            "tail": f"train count <= {tail}"}


def auto_group_thresholds(counts: Sequence[int] | np.ndarray) -> tuple[int, int]:
    """Thresholds that keep the paper's shares (14 head and 15 tail tags of 56) on any tag-count profile.

    For datasets far smaller than MTG-Jamendo (the synthetic demo), where the paper's absolute thresholds would
    put every tag in the tail.
    """
    c = np.sort(np.asarray(counts))[::-1]
    n = len(c)
    n_head = max(1, round(n * _PAPER_HEAD_SHARE))
    n_tail = max(1, round(n * _PAPER_TAIL_SHARE))
    head = int(c[min(n_head, n - 1)])  # tags with more than this are head
    tail = int(c[n - n_tail])  # tags with at most this are tail
    tail = min(head, tail)
    return max(head, tail + 1), tail
