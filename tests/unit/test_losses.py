"""Loss functions against hand-computed values and independent formulas (torchvision / Ridnik / Wu style)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focaltag.errors import ConfigError
from focaltag.training.losses import (
    LOSSES,
    build_loss,
    class_balanced_weights,
    loss_defaults,
    output_bias_init,
)

LOGITS = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]
TARGETS = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
COUNTS = [10, 20, 40]


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _loss(name: str, logits=LOGITS, targets=TARGETS, counts=COUNTS, **hyper) -> float:
    fn = build_loss(name, class_counts=counts, **hyper)
    return float(fn(torch.tensor(logits), torch.tensor(targets)))


def _per_sample_mean(element) -> float:
    """Sum ``element(x, y, c)`` over the tags of each sample, then average over the samples (pure Python)."""
    total = 0.0
    for row_x, row_y in zip(LOGITS, TARGETS, strict=True):
        total += sum(element(x, y, c) for c, (x, y) in enumerate(zip(row_x, row_y, strict=True)))
    return total / len(LOGITS)


# ---------------------------------------------------------------- hand-computed single elements


def test_focal_single_elements_by_hand():
    # logit 0 -> p = 0.5: positive 0.25 * 0.5^2 * ln 2, negative 0.75 * 0.5^2 * ln 2
    assert _loss("focal", [[0.0]], [[1.0]], None) == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    assert _loss("focal", [[0.0]], [[0.0]], None) == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


def test_asl_single_elements_by_hand():
    # positive, gamma+ = 0: plain -log p
    assert _loss("asl", [[0.0]], [[1.0]], None) == pytest.approx(math.log(2), rel=1e-6)
    # negative at p = 0.5: p_m = 0.45, loss = 0.45^4 * -log(0.55)
    assert _loss("asl", [[0.0]], [[0.0]], None) == pytest.approx(0.45**4 * -math.log(0.55), rel=1e-6)
    # negative with p < clip: p_m = 0 -> no loss at all
    assert _loss("asl", [[-5.0]], [[0.0]], None) == 0.0


# ---------------------------------------------------------------- 2x3 examples, pure-Python formulas


def test_bce_mean_over_all_elements():
    def element(x, y, _):
        p = _sig(x)
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = _per_sample_mean(element) / 3  # mean over all 6 elements
    assert _loss("bce") == pytest.approx(expected, rel=1e-6)


def test_focal_2x3_by_formula():
    def element(x, y, _):
        p = _sig(x)
        return -(y * 0.25 * (1 - p) ** 2 * math.log(p) + (1 - y) * 0.75 * p**2 * math.log(1 - p))

    assert _loss("focal") == pytest.approx(_per_sample_mean(element), rel=1e-6)


def test_cb_focal_2x3_by_formula():
    raw = [(1 - 0.995) / (1 - 0.995**n) for n in COUNTS]
    weights = [w / sum(raw) * 3 for w in raw]

    def element(x, y, c):
        p = _sig(x)
        return -weights[c] * (y * (1 - p) ** 2 * math.log(p) + (1 - y) * p**2 * math.log(1 - p))

    assert _loss("cb_focal") == pytest.approx(_per_sample_mean(element), rel=1e-6)


def _db_r(targets_row, c, counts=COUNTS):
    pos = [1 / counts[k] for k, y in enumerate(targets_row) if y]
    if not pos:
        return 1.1
    return _sig(10 * ((1 / counts[c]) / sum(pos) - 0.2)) + 0.1


def test_db_focal_2x3_by_formula():
    total = 0.0
    for row_x, row_y in zip(LOGITS, TARGETS, strict=True):
        for c, (x, y) in enumerate(zip(row_x, row_y, strict=True)):
            if y:
                p = _sig(x)
                fl = -0.25 * (1 - p) ** 2 * math.log(p)
            else:
                p = _sig(2 * x)
                fl = -0.75 * p**2 * math.log(1 - p) / 2
            total += _db_r(row_y, c) * fl
    assert _loss("db_focal") == pytest.approx(total / 2, rel=1e-6)


def test_db_focal_nu_shifts_logits():
    nu = [0.5, -1.0, 2.0]
    shifted = [[x - n for x, n in zip(row, nu, strict=True)] for row in LOGITS]
    assert _loss("db_focal", nu=nu) == pytest.approx(_loss("db_focal", logits=shifted), rel=1e-6)


def test_db_rebalance_weight_hand_example():
    # counts 10, 20, 40 -> 1/n = .1, .05, .025; a sample with tags {0, 1}: sum = .15, w = 2/3, 1/3, 1/6
    loss = build_loss("db_focal", class_counts=COUNTS)
    r = loss.rebalance_weights(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    expected_first = [_sig(10 * (w - 0.2)) + 0.1 for w in (2 / 3, 1 / 3, 1 / 6)]
    assert r[0].tolist() == pytest.approx(expected_first, rel=1e-6)
    assert r[0, 0].item() == pytest.approx(0.990684 + 0.1, rel=1e-6)  # sigmoid(4.6667) by hand
    # no positive tag: the limit of the formula, 1 + 0.1
    assert r[1].tolist() == pytest.approx([1.1, 1.1, 1.1])


def test_asl_2x3_by_formula():
    def element(x, y, _):
        p = _sig(x)
        if y:
            return -math.log(p)
        p_m = max(p - 0.05, 0.0)
        return -(p_m**4) * math.log(1 - p_m)

    assert _loss("asl") == pytest.approx(_per_sample_mean(element), rel=1e-6)


# ---------------------------------------------------------------- independent implementations


def _torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss, written out (reduction='none')."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def _random_batch(seed=0, shape=(8, 5)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * 3
    targets = (torch.rand(shape, generator=gen) < 0.3).float()
    return logits, targets


def test_focal_matches_torchvision_formula():
    logits, targets = _random_batch()
    expected = _torchvision_sigmoid_focal_loss(logits, targets).sum() / logits.shape[0]
    assert build_loss("focal")(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cb_focal_matches_torchvision_formula_with_weights():
    logits, targets = _random_batch(1)
    counts = [5, 50, 500, 80, 1]
    raw = torch.tensor([(1 - 0.995) / (1 - 0.995**n) for n in counts])
    weights = raw / raw.sum() * len(counts)
    expected = (weights * _torchvision_sigmoid_focal_loss(logits, targets, alpha=-1)).sum() / logits.shape[0]
    got = build_loss("cb_focal", class_counts=counts)(logits, targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cb_focal_equal_counts_is_twice_half_alpha_focal():
    logits, targets = _random_batch(2)
    cb = build_loss("cb_focal", class_counts=[7] * 5)(logits, targets)
    focal = build_loss("focal", alpha=0.5)(logits, targets)
    assert cb.item() == pytest.approx(2 * focal.item(), rel=1e-5)


def _ridnik_asl(x, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """Ridnik et al.'s AsymmetricLoss.forward, written out (sum per sample, then mean)."""
    xs_pos = torch.sigmoid(x)
    xs_neg = (1 - xs_pos + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * y + xs_neg * (1 - y)
    gamma = gamma_pos * y + gamma_neg * (1 - y)
    loss = loss * torch.pow(1 - pt, gamma)
    return -loss.sum() / x.shape[0]


def test_asl_matches_reference_formula():
    logits, targets = _random_batch(3)
    assert build_loss("asl")(logits, targets).item() == pytest.approx(_ridnik_asl(logits, targets).item(), rel=1e-5)
    got = build_loss("asl", gamma_pos=1.0, gamma_neg=2.0, clip=0.1)(logits, targets).item()
    assert got == pytest.approx(_ridnik_asl(logits, targets, 2.0, 1.0, 0.1).item(), rel=1e-5)


def test_bce_matches_torch():
    logits, targets = _random_batch(4)
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    assert build_loss("bce")(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_reduction_option():
    logits, targets = _random_batch(5)
    mean = build_loss("focal", reduction="mean")(logits, targets)
    batchmean = build_loss("focal")(logits, targets)
    assert batchmean.item() == pytest.approx(mean.item() * logits.shape[1], rel=1e-6)


# ---------------------------------------------------------------- stability, soft targets, weights


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_loss_and_gradient_at_extreme_logits(name):
    logits = torch.tensor([[50.0, -50.0, 50.0], [-50.0, 50.0, -50.0]], requires_grad=True)
    for targets in (TARGETS, [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], [[0.3, 0.7, 0.0], [1.0, 0.5, 0.2]]):
        logits.grad = None
        loss = build_loss(name, class_counts=COUNTS)(logits, torch.tensor(targets))
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["focal", "cb_focal", "db_focal"])
def test_confidently_wrong_logits_give_large_loss(name):
    wrong = _loss(name, [[-50.0, 50.0, -50.0]], [[1.0, 0.0, 1.0]])
    right = _loss(name, [[50.0, -50.0, 50.0]], [[1.0, 0.0, 1.0]])
    assert wrong > 10.0
    assert right < 1e-6


@pytest.mark.parametrize("name", ["bce", "focal", "cb_focal", "asl"])
def test_mixup_soft_targets_equal_lambda_mix(name):
    logits, y1 = _random_batch(6, (4, 3))
    y2 = torch.flip(y1, dims=[0])
    lam = 0.3
    fn = build_loss(name, class_counts=COUNTS)
    mixed = fn(logits, lam * y1 + (1 - lam) * y2)
    assert mixed.item() == pytest.approx((lam * fn(logits, y1) + (1 - lam) * fn(logits, y2)).item(), rel=1e-5)


def test_db_focal_accepts_soft_targets():
    logits, y1 = _random_batch(7, (4, 3))
    loss = build_loss("db_focal", class_counts=COUNTS)(logits, 0.4 * y1 + 0.6 * torch.flip(y1, dims=[0]))
    assert torch.isfinite(loss) and loss.item() > 0


def test_cb_weights_sum_to_number_of_tags_and_favour_rare_tags():
    counts = [927, 500, 200, 59]
    w = class_balanced_weights(counts)
    assert w.sum().item() == pytest.approx(len(counts), rel=1e-6)
    assert torch.all(w[1:] > w[:-1])


@pytest.mark.parametrize("kind", [list, np.array, torch.tensor])
def test_class_counts_accept_list_numpy_tensor(kind):
    expected = class_balanced_weights([10, 20, 40])
    assert torch.allclose(class_balanced_weights(kind([10, 20, 40])), expected)
    assert _loss("cb_focal", counts=kind([10, 20, 40])) == pytest.approx(_loss("cb_focal"), rel=1e-7)


def test_output_bias_init():
    bias = output_bias_init("focal")
    assert bias == pytest.approx(-math.log(99.0))
    assert _sig(bias) == pytest.approx(0.01)
    assert output_bias_init("cb_focal", prior=0.1, beta=0.99) == pytest.approx(-math.log(9.0))
    for name in ("bce", "db_focal", "asl"):
        assert output_bias_init(name) is None


def test_loss_module_follows_device_and_dtype_of_logits():
    fn = build_loss("cb_focal", class_counts=COUNTS)
    loss = fn(torch.tensor(LOGITS, dtype=torch.bfloat16), torch.tensor(TARGETS))
    assert loss.dtype == torch.float32
    assert "weights" in dict(fn.named_buffers())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_loss("focall"), "loss must be one of"),
        (lambda: build_loss("cb_focal"), "needs class_counts"),
        (lambda: build_loss("db_focal"), "needs class_counts"),
        (lambda: build_loss("focal", gama=2), "unknown hyper-parameter.*gama"),
        (lambda: build_loss("focal", alpha=1.5), r"alpha must be in \[0, 1\]"),
        (lambda: build_loss("cb_focal", class_counts=[1, 2], beta=1.0), "beta must be in"),
        (lambda: build_loss("bce", reduction="avg"), "reduction must be one of"),
        (lambda: build_loss("cb_focal", class_counts=[3, 0, 2]), r"positive for every tag.*\[1\]"),
        (lambda: build_loss("db_focal", class_counts=[[1, 2]]), "1-D"),
        (lambda: build_loss("db_focal", class_counts=[1, 2], nu=[1, 2, 3]), "nu must be"),
        (lambda: output_bias_init("focal", prior=0.0), "prior must be in"),
        (lambda: loss_defaults("nope"), "loss must be one of"),
    ],
)
def test_config_errors_are_one_line(call, match):
    with pytest.raises(ConfigError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_shape_mismatches_are_config_errors():
    with pytest.raises(ConfigError, match="logits and targets"):
        build_loss("bce")(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="class_counts for 3 tags"):
        build_loss("cb_focal", class_counts=COUNTS)(torch.zeros(2, 4), torch.zeros(2, 4))
