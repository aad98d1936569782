"""Dataset statistics against hand-computed values and independent formulas."""

from __future__ import annotations

import numpy as np
import pytest

from focaltag.data.metadata import TagVocabulary, TrackRecord
from focaltag.data.stats import cooccurrence, dataset_stats, tag_groups

T = [
    TrackRecord("1", "a", ("x---a", "x---b"), duration=10.0),
    TrackRecord("2", "b", ("x---a",), duration=20.0),
    TrackRecord("3", "c", ("x---a", "x---b", "x---c"), duration=60.0),
    TrackRecord("4", "d", ("x---c", "y---z")),
]


def test_stats_by_hand() -> None:
    vocab = TagVocabulary(["x---a", "x---b", "x---c"])
    s = dataset_stats(T, vocab, group_thresholds=(2, 1), top=2)
    assert s["n_tracks"] == 4 and s["n_tags"] == 3
    assert s["tag_counts"] == {"x---a": 3, "x---b": 2, "x---c": 2}
    assert s["imbalance_factor"] == 1.5
    assert s["groups"] == {"head": ["x---a"], "middle": ["x---b", "x---c"], "tail": []}
    # vocabulary tags per track: 2, 1, 3, 1 (y---z is outside the vocabulary)
    assert s["tags_per_track"] == {"mean": 1.75, "median": 1.5, "min": 1.0, "max": 3.0}
    assert s["duration"]["n_tracks"] == 3 and s["duration"]["mean"] == 30.0 and s["duration"]["median"] == 20.0
    assert s["ignored_tags"] == ["y---z"]
    # a&b co-occur on tracks 1 and 3; a&c and b&c on track 3 only
    assert s["top_cooccurrence"][0]["tags"] == ["x---a", "x---b"] and s["top_cooccurrence"][0]["count"] == 2


def test_correlation_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < [0.5, 0.3, 0.2, 0.1, 0.4]).astype(np.int8)
    y[:, 3] |= y[:, 0] & (rng.random(200) < 0.5)
    tags = [f"t{i}" for i in range(5)]
    by_count, by_corr = cooccurrence(y, tags, top=10)
    ref = np.corrcoef(y.T.astype(float))
    co = y.T.astype(int) @ y.astype(int)
    assert len(by_corr) == 10
    for p in by_count + by_corr:
        i, j = (tags.index(t) for t in p["tags"])
        assert p["correlation"] == pytest.approx(ref[i, j], abs=1e-4) and p["count"] == co[i, j]
    assert [p["correlation"] for p in by_corr] == sorted((p["correlation"] for p in by_corr), reverse=True)
    assert [p["count"] for p in by_count] == sorted((p["count"] for p in by_count), reverse=True)


def test_groups_thresholds_are_inclusive_as_in_the_paper() -> None:
    g = tag_groups({"a": 551, "b": 550, "c": 201, "d": 200, "e": 1})
    assert g == {"head": ["a"], "middle": ["b", "c"], "tail": ["d", "e"]}


def test_zero_count_tag_gives_undefined_imbalance() -> None:
    s = dataset_stats(T[:2], TagVocabulary(["x---a", "x---b", "x---c"]))
    assert s["imbalance_factor"] is None and s["least_frequent"] == {"tag": "x---c", "count": 0}
