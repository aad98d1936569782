"""The synthetic dataset's plan: real tag profile, splits by artist, deterministic, distinct tag signatures."""

from __future__ import annotations

from collections import Counter

import numpy as np

from focaltag.data.synth import _plan, tag_signatures
from focaltag.data.tags import MOODTHEME_TAGS, MOODTHEME_TRAIN_COUNTS


def test_plan_is_deterministic_and_seed_dependent() -> None:
    assert _plan(300, 5, 20, 60) == _plan(300, 5, 20, 60)
    assert _plan(300, 5, 20, 60) != _plan(300, 6, 20, 60)


def test_large_plan_approaches_the_real_imbalance() -> None:
    plans = _plan(2000, 0, 20, 60)
    train = Counter(t.split("---")[1] for p in plans if p.subset == "train" for t in p.tags)
    assert len(train) == 56
    factor = max(train.values()) / min(train.values())
    assert 10 <= factor <= 25  # real split-0: 15.7
    # most / least frequent follow the real profile's ends
    real = sorted(MOODTHEME_TRAIN_COUNTS, key=MOODTHEME_TRAIN_COUNTS.get)
    assert max(train, key=train.get) in real[-3:]
    mean_tags = np.mean([len(p.tags) for p in plans])
    assert 1.5 <= mean_tags <= 2.2  # real data: ~1.8 tags per track
    shares = Counter(p.subset for p in plans)
    assert abs(shares["train"] / 2000 - 0.55) < 0.08


def test_tag_signatures_are_distinct_and_in_the_model_band() -> None:
    sigs = tag_signatures()
    assert sorted("mood/theme---" + t for t in sigs) == list(MOODTHEME_TAGS)
    freqs = sorted(s["freq"] for s in sigs.values())
    assert freqs[0] > 100 and freqs[-1] < 8000  # inside the 0-8 kHz mel range
    assert min(np.diff(np.log(freqs))) > 0.02  # no two tags share a pitch
