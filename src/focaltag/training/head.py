"""Training a small head on stored embeddings: multi-label stratified folds, the paper's losses, samplers.

The head (:class:`focaltag.models.head.EmbeddingHead`: standardisation, then a linear layer or one hidden layer)
is trained on one embedding per track with the project's losses (:func:`focaltag.training.losses.build_loss`:
``bce``, ``focal``, ``cb_focal``, ``db_focal``) and either shuffled or class-aware batches
(:class:`focaltag.training.samplers.ClassAwareSampler`). Cross-validation gives out-of-fold probabilities on
folds that keep every tag's positives spread over the folds (iterative stratification, Sechidis et al. 2011),
and chooses the head size by out-of-fold macro PR-AUC. Everything is a pure function of its inputs and the seed.

Scoring those predictions with intervals, thresholds and the comparison with BCE is
:mod:`focaltag.library.heads`' job (it sits above evaluation); this module needs only the MediaEval metric
(:mod:`focaltag.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from focaltag.errors import ConfigError, DataError
from focaltag.models.head import EmbeddingHead
from focaltag.training.loss_registry import NEEDS_COUNTS, PAPER_LOSSES, PRIOR_BIAS

__all__ = ["HeadOptions", "HeadFit", "SAMPLINGS", "HEAD_LOSSES", "normalize_loss", "multilabel_folds", "fit_head",
           "predict_head", "cross_val_predict", "select_head_size", "fold_seed"]

logger = logging.getLogger(__name__)

SAMPLINGS = ("standard", "class-aware")
HEAD_LOSSES = PAPER_LOSSES
"""The losses a head is trained with: the paper's four."""


def normalize_loss(name: str) -> str:
    """``cb-focal`` -> ``cb_focal``: the CLI spelling to the loss registry's name; unknown names are refused."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in HEAD_LOSSES:
        shown = ", ".join(n.replace("_", "-") for n in HEAD_LOSSES)
        raise ConfigError(f"loss must be one of {shown}, got {name!r}")
    return key


@dataclass(frozen=True)
class HeadOptions:
    """How heads are trained and cross-validated (validated at construction).

    Attributes:
        loss: ``bce``, ``focal``, ``cb_focal`` or ``db_focal`` (``cb-focal`` spellings accepted).
        sampling: ``standard`` (shuffled tracks) or ``class-aware`` (the paper's class-aware sampler).
        hidden_sizes: the head sizes cross-validation chooses from; 0 is a linear head.
        folds: cross-validation folds (at least 2; every tag needs at least this many positive tracks).
        seed: fixes the folds, the initial weights and the batch order.
        steps: optimizer steps per fit.
        batch_size: tracks per step.
        lr: AdamW's peak learning rate (cosine decay to 0 over ``steps``).
        weight_decay: AdamW's decoupled weight decay.
        drop_rate: dropout after the hidden layer.
    """

    loss: str = "focal"
    sampling: str = "standard"
    hidden_sizes: tuple[int, ...] = (0, 256)
    folds: int = 5
    seed: int = 0
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-2
    drop_rate: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", normalize_loss(self.loss))
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        sizes = tuple(self.hidden_sizes)
        if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in sizes):
            raise ConfigError(f"hidden_sizes must be one or more integers >= 0 (0 = linear), got {self.hidden_sizes!r}")
        object.__setattr__(self, "hidden_sizes", tuple(dict.fromkeys(sizes)))
        for name, least in (("folds", 2), ("steps", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("lr", "weight_decay", "drop_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.drop_rate < 1:
            raise ConfigError(f"need lr > 0, weight_decay >= 0 and drop_rate in [0, 1); got lr={self.lr}, "
                              f"weight_decay={self.weight_decay}, drop_rate={self.drop_rate}")


def _check_xy(embeddings: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"need embeddings (n_tracks, D) and labels (n_tracks, n_tags) with the same number of "
                        f"tracks, got shapes {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise DataError("embeddings contain NaN or inf; re-extract them")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must hold only 0 and 1")
    return x, y.astype(np.int8)


def multilabel_folds(labels: object, n_folds: int, *, seed: int = 0) -> np.ndarray:
    """Fold number (0..n_folds-1) of every track, spreading each tag's positives evenly over the folds.

    Iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011): the tag with the fewest unassigned
    positives goes first; each of its tracks joins the fold that still wants the most of that tag (ties: the
    fold that wants the most tracks, then at random). Tracks without any tag then fill the folds to equal
    sizes. The rarest tag's positives land in distinct folds, so a tag with at least ``n_folds`` positives that
    is rarest when its turn comes has a positive in every fold.
    """
    y = np.asarray(labels).astype(bool)
    if y.ndim != 2:
        raise DataError(f"labels must be (n_tracks, n_tags), got shape {y.shape}")
    n = y.shape[0]
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"folds must be an integer >= 2, got {n_folds!r}")
    if n < n_folds:
        raise DataError(f"{n} track(s) cannot be split into {n_folds} folds; label more tracks or lower --folds")
    rng = np.random.default_rng([0xF01D, seed])
    fold = np.full(n, -1, dtype=np.int64)
    want_tracks = np.full(n_folds, n / n_folds)
    want = np.tile(y.sum(axis=0) / n_folds, (n_folds, 1)).astype(np.float64)

    def pick(candidates: np.ndarray) -> int:
        best = candidates[want_tracks[candidates] == want_tracks[candidates].max()]
        return int(best[0] if len(best) == 1 else rng.choice(best))

    unassigned = np.ones(n, dtype=bool)
    while True:
        remaining = y[unassigned].sum(axis=0)
        if not remaining.any():
            break
        rarest = np.flatnonzero(remaining == remaining[remaining > 0].min())
        tag = int(rarest[0] if len(rarest) == 1 else rng.choice(rarest))
        rows = np.flatnonzero(unassigned & y[:, tag])
        rng.shuffle(rows)
        for row in rows:
            column = want[:, tag]
            f = pick(np.flatnonzero(column == column.max()))
            fold[row] = f
            unassigned[row] = False
            want[f, y[row]] -= 1
            want_tracks[f] -= 1
    rest = np.flatnonzero(unassigned)
    rng.shuffle(rest)
    for row in rest:
        f = pick(np.flatnonzero(want_tracks == want_tracks.max()))
        fold[row] = f
        want_tracks[f] -= 1
    return fold


def fold_seed(seed: int, index: int) -> int:
    """The seed of fit ``index`` under ``seed`` (independent streams, the same on every machine)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _batch_order(y: np.ndarray, sampling: str, total: int, seed: int) -> np.ndarray:
    """``total`` track indices in training order: shuffled epochs, or the class-aware sampler's epochs."""
    from focaltag.training.samplers import ClassAwareSampler, ShuffleSampler

    sampler: ShuffleSampler | ClassAwareSampler
    if sampling == "class-aware":
        counts = y.sum(axis=0)
        divisor = 4.0 if counts.max() * int((counts > 0).sum()) >= 4 else 1.0
        sampler = ClassAwareSampler(y, seed=seed, epoch_divisor=divisor, num_replicas=1, rank=0)
    else:
        sampler = ShuffleSampler(len(y), seed=seed, num_replicas=1, rank=0)
    parts: list[np.ndarray] = []
    have, epoch = 0, 0
    while have < total:
        part = sampler.epoch_indices(epoch)
        parts.append(part)
        have += len(part)
        epoch += 1
    return np.concatenate(parts)[:total]


def _initial_bias(loss: str, y: np.ndarray) -> np.ndarray | float:
    """The paper's prior bias for focal / CB focal (:func:`~focaltag.training.losses.output_bias_init`); the
    training tags' frequency (as a logit) for BCE and DB focal, so every loss starts from a sensible output."""
    from focaltag.training.losses import output_bias_init

    if loss in PRIOR_BIAS:
        bias = output_bias_init(loss)
        assert bias is not None
        return bias
    p = np.clip(y.mean(axis=0), 1.0 / (2 * len(y)), 1 - 1.0 / (2 * len(y)))
    return np.log(p / (1 - p)).astype(np.float32)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: a head's batches are too small to share between threads, and on a busy machine
    threads waiting for each other cost far more than they save (bench/head.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class HeadFit:
    """What one fit used: loss, sampling, head size, seed; with the trained head (eval mode)."""

    head: EmbeddingHead
    loss: str
    sampling: str
    hidden_dim: int
    seed: int


def fit_head(embeddings: object, labels: object, *, hidden_dim: int = 0, options: HeadOptions | None = None,
             loss: str | None = None, sampling: str | None = None, seed: int | None = None) -> HeadFit:
    """Train one head on all the given tracks; ``loss`` / ``sampling`` / ``seed`` override ``options``'.

    A tag without a positive among these tracks (possible inside a fold) counts as 1 for the class-balanced
    losses, which need positive counts; it simply learns "no".
    """
    from focaltag.training.losses import build_loss

    opts = options or HeadOptions()
    loss_name = normalize_loss(loss or opts.loss)
    sampling_name = sampling or opts.sampling
    if sampling_name not in SAMPLINGS:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling_name!r}")
    fit_seed = opts.seed if seed is None else int(seed)
    x_np, y_np = _check_xy(embeddings, labels)
    counts = np.maximum(y_np.sum(axis=0), 1)
    loss_fn = build_loss(loss_name, class_counts=counts if loss_name in NEEDS_COUNTS else None)
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(fit_seed)
        head = EmbeddingHead(x_np.shape[1], y_np.shape[1], hidden_dim=int(hidden_dim), drop_rate=opts.drop_rate)
        x = torch.from_numpy(x_np)
        y = torch.from_numpy(y_np.astype(np.float32))
        head.set_standardization(x.mean(dim=0), x.std(dim=0, unbiased=False) if len(x) > 1 else torch.ones(x.shape[1]))
        head.set_output_bias(torch.as_tensor(_initial_bias(loss_name, y_np)))
        order = torch.from_numpy(_batch_order(y_np, sampling_name, opts.steps * opts.batch_size, fit_seed))
        optimizer = torch.optim.AdamW(head.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / opts.steps)))
        head.train()
        for step in range(opts.steps):
            idx = order[step * opts.batch_size:(step + 1) * opts.batch_size]
            optimizer.zero_grad(set_to_none=True)
            value = loss_fn(head(x[idx]), y[idx])
            if not torch.isfinite(value):
                raise DataError(f"the head's {loss_name} loss became {value.item()} at step {step + 1}; check "
                                "the embeddings for extreme values")
            value.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    return HeadFit(head, loss_name, sampling_name, int(hidden_dim), fit_seed)


@torch.no_grad()
def predict_head(head: EmbeddingHead, embeddings: object) -> np.ndarray:
    """Sigmoid probabilities ``(n_tracks, n_tags)`` (float64) of a trained head."""
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    with _one_thread():
        return torch.sigmoid(head.eval()(x)).double().numpy()


def cross_val_predict(embeddings: object, labels: object, folds: np.ndarray, *, hidden_dim: int = 0,
                      options: HeadOptions | None = None, loss: str | None = None,
                      sampling: str | None = None) -> np.ndarray:
    """Out-of-fold probabilities: each fold predicted by a head trained on the other folds.

    Fold ``f`` trains with seed :func:`fold_seed` ``(seed, f)``, so two losses compared on the same folds also
    start from the same weights where their heads have the same shape.
    """
    opts = options or HeadOptions()
    x, y = _check_xy(embeddings, labels)
    folds = np.asarray(folds)
    if folds.shape != (len(x),):
        raise DataError(f"folds must give one fold number per track ({len(x)}), got shape {folds.shape}")
    out = np.zeros(y.shape, dtype=np.float64)
    for f in np.unique(folds):
        test = folds == f
        fit = fit_head(x[~test], y[~test], hidden_dim=hidden_dim, options=opts, loss=loss, sampling=sampling,
                       seed=fold_seed(opts.seed, int(f)))
        out[test] = predict_head(fit.head, x[test])
    return out


def select_head_size(embeddings: object, labels: object, folds: np.ndarray, options: HeadOptions,
                     sizes: Sequence[int] | None = None) -> tuple[int, dict[int, tuple[float, np.ndarray]]]:
    """Cross-validate every head size with ``options``' loss and sampling; the size with the best out-of-fold
    macro PR-AUC (the first on ties: linear before hidden) and ``{size: (macro PR-AUC, out-of-fold)}``."""
    from focaltag.metrics import macro_scores

    results: dict[int, tuple[float, np.ndarray]] = {}
    for size in sizes or options.hidden_sizes:
        oof = cross_val_predict(embeddings, labels, folds, hidden_dim=size, options=options)
        score = macro_scores(np.asarray(labels), oof)["pr_auc"]
        results[int(size)] = (float(score), oof)
        logger.info("head %s: out-of-fold macro PR-AUC %.4f (%s loss, %s sampling)",
                    "linear" if size == 0 else f"hidden {size}", score, options.loss, options.sampling)
    best = max(results, key=lambda s: (np.nan_to_num(results[s][0], nan=-1.0), -list(results).index(s)))
    return best, results
