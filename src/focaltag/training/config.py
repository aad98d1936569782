"""The training config: frozen dataclasses whose defaults are the paper's recipe, loaded strictly from YAML.

A config file mirrors the sections below (``data``, ``model``, ``loss``, ``sampling``, ``mixup``, ``optim``,
``validation``, ``runtime``, plus top-level ``seed``); every key is optional and an unknown or mistyped key
is a :class:`~focaltag.errors.ConfigError` naming it. ``--set optim.adam_lr=1e-4`` style overrides are
applied before validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from focaltag.config import apply_overrides, from_dict, load_yaml, to_dict
from focaltag.errors import ConfigError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "SamplingConfig",
    "MixupConfig",
    "OptimConfig",
    "ValidationConfig",
    "RuntimeConfig",
    "TrainConfig",
    "load_train_config",
    "train_config_from_dict",
    "LOSS_NAMES",
]

LOSS_NAMES = ("bce", "focal", "cb_focal", "db_focal", "asl")


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    """Raise a one-line ConfigError ``key: expected ..., got ...`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the tracks, their tags and the 16 kHz waveform cache are.

    ``dataset_dir`` is an MTG-Jamendo-layout folder (``splits/split-N/*.tsv`` and ``audio/``); ``train_tsv``
    / ``validation_tsv`` override the split files. ``extra_train`` lists more training lists (the authors'
    ``TRACK_ID PATH TAGS`` format or official TSVs) whose audio lies under ``extra_audio_dir``. Every training
    and validation track must be in the cache at ``cache_dir`` (default ``<dataset_dir>/cache``); with
    ``auto_prepare`` a missing cache is built from the audio first.
    """

    dataset_dir: Path | None = None
    split: int = 0
    train_tsv: Path | None = None
    validation_tsv: Path | None = None
    extra_train: tuple[Path, ...] = ()
    extra_audio_dir: Path | None = None
    audio_dir: Path | None = None  # default <dataset_dir>/audio
    cache_dir: Path | None = None  # default <dataset_dir>/cache
    tag_category: str | None = "mood/theme"  # only tags under this prefix; null keeps every tag
    auto_prepare: bool = True
    prepare_workers: int = 2

    def __post_init__(self) -> None:
        _check(self.split >= 0, "data.split", "an integer >= 0", self.split)
        _check(self.prepare_workers >= 1, "data.prepare_workers", "an integer >= 1", self.prepare_workers)


@dataclass(frozen=True)
class ModelConfig:
    """Which network (``focaltag.create_model`` arguments) and optional pretrained weights to start from."""

    name: str = "short_chunk_resnet"
    variant: Literal["paper", "won2020"] = "paper"  # 4.6 s (73,600 samples) or 3.69 s (59,049) input
    width: int = 128
    init_from: Path | None = None  # checkpoint whose name- and shape-matching entries are loaded

    def __post_init__(self) -> None:
        _check(self.width >= 1, "model.width", "an integer >= 1", self.width)


@dataclass(frozen=True)
class LossConfig:
    """``focaltag.build_loss(name, class_counts, **hyper)``; hyper e.g. ``{gamma: 2, alpha: 0.25}``."""

    name: Literal["bce", "focal", "cb_focal", "db_focal", "asl"] = "bce"
    hyper: dict[str, Any] = field(default_factory=dict)
    # output-bias init: auto = the loss's own (-log((1-pi)/pi), pi=.01, for focal / cb_focal, as Lin et al.),
    # class_prior = log(p_c / (1 - p_c)) from the training tag frequencies (any loss), none = PyTorch's default
    bias_init: Literal["auto", "class_prior", "none"] = "auto"


@dataclass(frozen=True)
class SamplingConfig:
    """Standard shuffling, or class-aware sampling as the reference (tags in turn, ``draws_per_tag`` each)."""

    name: Literal["standard", "class_aware"] = "standard"
    draws_per_tag: int = 3
    epoch_divisor: float = 4.0  # class-aware epoch = max tag count x number of tags / epoch_divisor

    def __post_init__(self) -> None:
        _check(self.draws_per_tag >= 1, "sampling.draws_per_tag", "an integer >= 1", self.draws_per_tag)
        _check(self.epoch_divisor > 0, "sampling.epoch_divisor", "a number > 0", self.epoch_divisor)


@dataclass(frozen=True)
class MixupConfig:
    """Waveform mixup: lambda ~ Beta(alpha, alpha) per batch, the loss mixed by lambda."""

    enabled: bool = False
    alpha: float = 1.0  # Beta(1, 1) = uniform lambda

    def __post_init__(self) -> None:
        _check(self.alpha >= 0, "mixup.alpha", "a number >= 0", self.alpha)
        _check(self.alpha > 0 or not self.enabled, "mixup.alpha", "a number > 0 when mixup.enabled is true",
               self.alpha)


@dataclass(frozen=True)
class OptimConfig:
    """The paper's schedule: Adam for ``adam_epochs``, then SGD (Nesterov) from the best checkpoint, the lr
    divided by ``lr_decay_factor`` (after reloading the best) every ``lr_decay_every`` epochs.

    ``adam_lr`` is the paper's 5e-4; the reference code's default was 1e-4 (``--set optim.adam_lr=1e-4``).
    """

    batch_size: int = 32  # global batch (split over DDP ranks)
    epochs: int = 200
    adam_lr: float = 5e-4
    adam_weight_decay: float = 1e-4
    adam_epochs: int = 80
    sgd_lr: float = 1e-2
    sgd_momentum: float = 0.9
    sgd_nesterov: bool = True
    sgd_weight_decay: float = 1e-4
    lr_decay_every: int = 30
    lr_decay_factor: float = 10.0
    reload_best: bool = True  # reload the best weights at every phase change, as the reference

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "optim.batch_size", "an integer >= 1", self.batch_size)
        _check(self.epochs >= 1, "optim.epochs", "an integer >= 1", self.epochs)
        _check(self.adam_epochs >= 0, "optim.adam_epochs", "an integer >= 0", self.adam_epochs)
        _check(self.lr_decay_every >= 1, "optim.lr_decay_every", "an integer >= 1", self.lr_decay_every)
        for key in ("adam_lr", "sgd_lr", "lr_decay_factor"):
            _check(getattr(self, key) > 0, f"optim.{key}", "a number > 0", getattr(self, key))
        for key in ("adam_weight_decay", "sgd_weight_decay", "sgd_momentum"):
            _check(getattr(self, key) >= 0, f"optim.{key}", "a number >= 0", getattr(self, key))


@dataclass(frozen=True)
class ValidationConfig:
    """Validation every epoch on ``n_chunks`` evenly spaced chunks per track; the best run is kept by
    macro PR-AUC (``pr_auc``) or by validation loss (``loss``, the paper's wording)."""

    n_chunks: int = 16
    select_by: Literal["pr_auc", "loss"] = "pr_auc"
    tracks_per_batch: int = 2  # tracks per forward pass (x n_chunks chunks)

    def __post_init__(self) -> None:
        _check(self.n_chunks >= 1, "validation.n_chunks", "an integer >= 1", self.n_chunks)
        _check(self.tracks_per_batch >= 1, "validation.tracks_per_batch", "an integer >= 1",
               self.tracks_per_batch)


@dataclass(frozen=True)
class RuntimeConfig:
    """Hardware and bookkeeping: device, loader workers, precision/layout/compile switches, step limits."""

    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    num_workers: int = 4
    bf16: bool = True  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on CPUs with AMX / AVX512-BF16 (bench/train.py: ~3.8x; changes numerics)
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward
    sync_batchnorm: bool = True  # SyncBatchNorm under multi-GPU DDP (CUDA only)
    max_steps_per_epoch: int | None = None  # cap an epoch (demos, smoke tests)
    max_steps: int | None = None  # stop (and save last.pt) after this many steps in total; --resume continues
    checkpoint_every_steps: int | None = None  # also save last.pt mid-epoch every N steps
    log_every_steps: int = 10  # TensorBoard train-loss interval

    def __post_init__(self) -> None:
        _check(self.num_workers >= 0, "runtime.num_workers", "an integer >= 0", self.num_workers)
        _check(self.log_every_steps >= 1, "runtime.log_every_steps", "an integer >= 1", self.log_every_steps)
        for key in ("max_steps_per_epoch", "max_steps", "checkpoint_every_steps"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"runtime.{key}", "null or an integer >= 1", value)
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        _check(ok, "runtime.device", "auto, cpu, cuda or cuda:N", dev)


@dataclass(frozen=True)
class TrainConfig:
    """A complete training run (defaults: the paper's recipe on MTG-Jamendo mood/theme split-0)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (paths as strings) for ``config.yaml`` and checkpoints."""
        return to_dict(self)


def train_config_from_dict(data: dict[str, Any] | None, *, source: str = "config") -> TrainConfig:
    """Validate a mapping into a TrainConfig; errors are prefixed with ``source`` (a file name)."""
    try:
        return from_dict(TrainConfig, data or {}, where="config")
    except ConfigError as err:
        if source == "config":
            raise
        raise ConfigError(f"{source}: {err}") from None


def load_train_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start from the defaults when ``path`` is None), apply ``key=value``
    overrides, and validate."""
    data = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    try:
        data = apply_overrides(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return train_config_from_dict(data, source=source)
