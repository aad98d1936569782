"""Tag groups for reporting: the paper's head / middle / tail split by training counts, or custom groups.

The head / middle / tail rule and its thresholds are defined once, in ``focaltag.data.groups`` (re-exported
here); this module adds what evaluation needs around it: training counts from metadata files, counts aligned
to the matrices' columns, and custom groups from YAML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from focaltag.data.groups import (
    DEFAULT_GROUP_THRESHOLDS,
    frequency_groups,
    group_rules,
    parse_group_thresholds,
)
from focaltag.errors import ConfigError, DataError, EvaluationError

__all__ = [
    "DEFAULT_GROUP_THRESHOLDS",
    "parse_group_thresholds",
    "frequency_groups",
    "group_rules",
    "load_groups",
    "resolve_groups",
    "count_training_tags",
    "align_counts",
]

def resolve_groups(groups: Mapping[str, Sequence[str]], tag_names: Sequence[str], *,
                   source: str = "groups") -> dict[str, list[str]]:
    """Map group members (full ``mood/theme---x`` or short ``x`` names) to the matrices' tag names."""
    from focaltag.data.metadata import TagVocabulary

    vocab = TagVocabulary(tag_names, sort=False)
    out: dict[str, list[str]] = {}
    for name, members in groups.items():
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise ConfigError(f"{source}: group {name!r} must be a list of tags, got {type(members).__name__}")
        try:
            out[str(name)] = [vocab.tags[vocab.index(str(m))] for m in members]
        except DataError as err:
            raise ConfigError(f"{source}: group {name!r}: {err}") from None
    return out


def load_groups(path: str | os.PathLike[str], tag_names: Sequence[str]) -> dict[str, list[str]]:
    """Read custom groups from a YAML file of ``name: [tag, ...]`` (e.g. valence / arousal groups)."""
    from focaltag.config import load_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"groups file not found: {path}; pass a YAML file of 'name: [tag, ...]'")
    data = load_yaml(path)
    if not data:
        raise ConfigError(f"{path}: expected a mapping of group name to a list of tags")
    return resolve_groups(data, tag_names, source=str(path))


def count_training_tags(paths: Sequence[str | os.PathLike[str]], tag_names: Sequence[str]) -> np.ndarray:
    """Training tracks per tag, summed over metadata files (official MTG TSV or the authors' list format)."""
    from focaltag.data.metadata import TagVocabulary, read_tracks, tag_counts

    vocab = TagVocabulary(tag_names, sort=False)
    total = np.zeros(len(vocab), dtype=np.int64)
    for path in paths:
        total += tag_counts(read_tracks(path, allow_untagged=True), vocab)
    return total


def align_counts(train_counts: Mapping[str, int] | Sequence[int] | np.ndarray,
                 tag_names: Sequence[str]) -> np.ndarray:
    """Training counts as an array in column order (a mapping may use full or short tag names)."""
    if isinstance(train_counts, Mapping):
        from focaltag.data.tags import short_tag

        lookup = {**{short_tag(k): v for k, v in train_counts.items()}, **dict(train_counts)}
        missing = [t for t in tag_names if t not in lookup and short_tag(t) not in lookup]
        if missing:
            raise EvaluationError(f"train_counts has no count for {len(missing)} tag(s), e.g. {missing[0]!r}; "
                                  "give a count for every tag")
        return np.array([lookup.get(t, lookup.get(short_tag(t))) for t in tag_names], dtype=np.int64)
    counts = np.asarray(train_counts)
    if counts.shape != (len(tag_names),):
        raise EvaluationError(f"train_counts must have one count per tag ({len(tag_names)}), got shape "
                              f"{counts.shape}")
    return counts.astype(np.int64)
