"""Waveform mixup: the mixed batch, Beta(alpha, alpha) lambdas and the lambda-mixed loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from focaltag.errors import ConfigError
from focaltag.training.mixup import mixup_batch, mixup_loss


def test_mixed_batch_is_lambda_combination_of_a_permutation():
    x = torch.randn(6, 100)
    y = (torch.rand(6, 5) < 0.4).float()
    batch = mixup_batch(x, y, alpha=1.0, rng=np.random.default_rng(0))
    assert 0.0 <= batch.lam <= 1.0
    assert sorted(batch.perm.tolist()) == list(range(6))
    expected = torch.stack([batch.lam * x[i] + (1 - batch.lam) * x[int(batch.perm[i])] for i in range(6)])
    torch.testing.assert_close(batch.inputs, expected)
    torch.testing.assert_close(batch.targets_b, y[batch.perm])
    assert batch.targets_a is y


def test_lambda_follows_beta_alpha_alpha():
    rng = np.random.default_rng(1)
    x, y = torch.zeros(4, 3), torch.zeros(4, 2)
    for alpha in (1.0, 0.3):
        lams = [mixup_batch(x, y, alpha=alpha, rng=rng).lam for _ in range(600)]
        assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    # Beta(1, 1) is uniform: a quarter of the draws in each quarter of [0, 1] (roughly)
    lams = np.array([mixup_batch(x, y, alpha=1.0, rng=rng).lam for _ in range(2000)])
    assert np.all(np.abs(np.histogram(lams, bins=4, range=(0, 1))[0] / 2000 - 0.25) < 0.04)


def test_mixed_loss_is_lambda_weighted_sum_and_equals_bce_on_mixed_targets():
    torch.manual_seed(0)
    x = torch.randn(8, 50)
    y = (torch.rand(8, 7) < 0.3).float()
    logits = torch.randn(8, 7)
    batch = mixup_batch(x, y, rng=np.random.default_rng(2))
    bce = torch.nn.BCEWithLogitsLoss()
    got = mixup_loss(bce, logits, batch)
    by_hand = batch.lam * bce(logits, y) + (1 - batch.lam) * bce(logits, y[batch.perm])
    torch.testing.assert_close(got, by_hand)
    # BCE is linear in the target, so the mixed loss equals BCE against the lambda-mixed targets
    soft = batch.lam * y + (1 - batch.lam) * y[batch.perm]
    torch.testing.assert_close(got, bce(logits, soft))


def test_seeded_rng_reproduces_the_batch():
    x, y = torch.randn(5, 9), torch.rand(5, 3)
    a = mixup_batch(x, y, rng=np.random.default_rng(42))
    b = mixup_batch(x, y, rng=np.random.default_rng(42))
    assert a.lam == b.lam
    torch.testing.assert_close(a.inputs, b.inputs)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="alpha"):
        mixup_batch(torch.zeros(2, 3), torch.zeros(2, 1), alpha=0.0)
    with pytest.raises(ConfigError, match="batch size"):
        mixup_batch(torch.zeros(2, 3), torch.zeros(3, 1))
