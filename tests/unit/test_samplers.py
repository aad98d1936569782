"""Class-aware and shuffle samplers: epoch length, draws in a row, tag coverage, DDP shares, resume."""

from __future__ import annotations

import numpy as np
import pytest

from focaltag.errors import DataError
from focaltag.training.samplers import ClassAwareSampler, ShuffleSampler, class_aware_epoch_length


def one_tag_labels(counts: list[int]) -> np.ndarray:
    """Multi-hot matrix where track i carries exactly one tag; tag j has counts[j] tracks."""
    rows = []
    for j, c in enumerate(counts):
        for _ in range(c):
            row = np.zeros(len(counts), dtype=np.int64)
            row[j] = 1
            rows.append(row)
    return np.stack(rows)


def tag_of(labels: np.ndarray, index: int) -> int:
    return int(np.flatnonzero(labels[index])[0])


def test_epoch_length_is_max_count_times_tags_over_divisor():
    labels = one_tag_labels([10, 3, 7, 1])
    # hand-computed: max count 10, 4 tags, divisor 4 -> 10
    assert ClassAwareSampler(labels, num_replicas=1, rank=0).global_length == 10
    assert len(ClassAwareSampler(labels, epoch_divisor=1, num_replicas=1, rank=0)) == 40
    assert class_aware_epoch_length([927, 59, 0, 500], 4) == int(927 * 3 / 4)  # empty tags do not count


def test_three_in_a_row_from_one_tag_and_every_tag_visited():
    counts = [9, 4, 6, 2, 5]
    labels = one_tag_labels(counts)
    sampler = ClassAwareSampler(labels, draws_per_tag=3, epoch_divisor=0.5, seed=3, num_replicas=1, rank=0)
    order = sampler.epoch_indices(0)
    assert len(order) == 9 * 5 * 2
    tags = [tag_of(labels, i) for i in order]
    triples = [tags[i:i + 3] for i in range(0, len(tags) - 2, 3)]
    assert all(len(set(t)) == 1 for t in triples)
    visits = [t[0] for t in triples]
    n_tags = len(counts)
    for start in range(0, len(visits) - n_tags + 1, n_tags):  # each pass of the tag cycle visits every tag once
        assert sorted(visits[start:start + n_tags]) == list(range(n_tags))


def test_each_tag_cycles_through_all_its_tracks_before_repeating():
    counts = [4, 6]
    labels = one_tag_labels(counts)
    sampler = ClassAwareSampler(labels, draws_per_tag=2, epoch_divisor=0.25, seed=1, num_replicas=1, rank=0)
    order = sampler.epoch_indices(0)
    for j, c in enumerate(counts):
        drawn = [int(i) for i in order if tag_of(labels, i) == j]
        members = set(np.flatnonzero(labels[:, j]).tolist())
        for start in range(0, len(drawn) - c + 1, c):
            assert set(drawn[start:start + c]) == members


def test_multi_label_tracks_and_empty_tags(caplog):
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    sampler = ClassAwareSampler(labels, num_replicas=1, rank=0, epoch_divisor=0.5)
    assert "1 of 3 tags have no training track" in caplog.text
    order = sampler.epoch_indices(0)
    assert len(order) == int(3 * 2 / 0.5)
    assert set(order.tolist()) <= {0, 1, 2, 3}


def test_same_seed_and_epoch_same_order_other_epoch_differs():
    labels = one_tag_labels([8, 5, 3])
    a = ClassAwareSampler(labels, seed=7, num_replicas=1, rank=0, epoch_divisor=1)
    b = ClassAwareSampler(labels, seed=7, num_replicas=1, rank=0, epoch_divisor=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    a.set_epoch(3)
    assert list(a) != list(b)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shares_are_disjoint_equal_length_and_cover_the_epoch(world):
    labels = one_tag_labels([11, 4, 7])
    samplers = [ClassAwareSampler(labels, seed=5, epoch_divisor=1, num_replicas=world, rank=r) for r in range(world)]
    for s in samplers:
        s.set_epoch(4)
    shares = [list(s) for s in samplers]
    assert len({len(s) for s in shares}) == 1
    full = ClassAwareSampler(labels, seed=5, epoch_divisor=1, num_replicas=1, rank=0).epoch_indices(4)
    n = len(full)
    total = len(shares[0]) * world
    assert total >= n and total - n < world
    # rank r holds positions r, r + world, ... of the (padded) global order: disjoint positions covering it
    rebuilt = [shares[p % world][p // world] for p in range(total)]
    assert rebuilt[:n] == full.tolist()
    assert rebuilt[n:] == full[: total - n].tolist()  # padding repeats the start, as DistributedSampler


def test_shuffle_sampler_is_a_permutation_shared_over_ranks():
    one = ShuffleSampler(10, seed=1, num_replicas=1, rank=0)
    one.set_epoch(0)
    perm0 = list(one)
    assert sorted(perm0) == list(range(10))
    one.set_epoch(1)
    assert list(one) != perm0
    ranks = [ShuffleSampler(10, seed=1, num_replicas=4, rank=r) for r in range(4)]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [3, 3, 3, 3]
    assert set().union(*map(set, shares)) == set(range(10))
    assert [shares[p % 4][p // 4] for p in range(10)] == perm0
    dropped = [ShuffleSampler(10, seed=1, num_replicas=4, rank=r, drop_last=True) for r in range(4)]
    assert sorted(sum((list(s) for s in dropped), [])) == sorted(perm0[:8])


@pytest.mark.parametrize("kind", ["shuffle", "class_aware"])
def test_resume_mid_epoch_yields_exactly_the_rest(kind):
    def make():
        if kind == "shuffle":
            return ShuffleSampler(25, seed=9, num_replicas=2, rank=1)
        return ClassAwareSampler(one_tag_labels([6, 4, 3]), seed=9, epoch_divisor=0.5, num_replicas=2, rank=1)

    a = make()
    a.set_epoch(3)
    whole = list(a)
    state = a.state_dict(consumed=4)
    b = make()
    b.load_state_dict(state)
    b.set_epoch(3)  # the loop calls set_epoch again: the resumed position is kept
    assert len(b) == len(whole) - 4
    assert list(b) == whole[4:]
    assert list(b) == whole  # the next pass is whole again
    b.set_epoch(4)
    assert len(b) == len(whole)


def test_load_state_rejects_other_world_size_or_kind():
    a = ShuffleSampler(20, seed=0, num_replicas=2, rank=0)
    with pytest.raises(DataError, match="number of processes"):
        ShuffleSampler(20, seed=0, num_replicas=4, rank=0).load_state_dict(a.state_dict())
    with pytest.raises(DataError, match="ShuffleSampler"):
        ClassAwareSampler(one_tag_labels([2, 2]), num_replicas=2, rank=0).load_state_dict(a.state_dict())


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(DataError, match="shape"):
        ClassAwareSampler(np.zeros(5), num_replicas=1, rank=0)
    with pytest.raises(DataError, match="no tag|at least one tag"):
        ClassAwareSampler(np.zeros((4, 3)), num_replicas=1, rank=0)
    with pytest.raises(DataError, match="empty"):
        ShuffleSampler(0, num_replicas=1, rank=0)
