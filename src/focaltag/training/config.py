"""The training config: frozen dataclasses whose defaults are the paper's recipe, loaded strictly from YAML.

A config file mirrors the sections below (``data``, ``model``, ``loss``, ``sampling``, ``mixup``, ``optim``,
``validation``, ``runtime``, plus top-level ``seed``); every key is optional and an unknown or mistyped key
is a :class:`~focaltag.errors.ConfigError` naming it. ``--set optim.adam_lr=1e-4`` style overrides are
applied before validation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from focaltag.config import apply_overrides, check_seed, from_dict, load_yaml, to_dict
from focaltag.devices import check_device_name
from focaltag.errors import ConfigError
from focaltag.precision import PRECISIONS, Precision
from focaltag.training.loss_registry import LOSSES

logger = logging.getLogger(__name__)

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
    "MODEL_ARGUMENTS",
    "drop_arguments_of_replaced_model",
    "override_model_name",
]

LOSS_NAMES = tuple(LOSSES)  # the registry's names (focaltag.training.loss_registry)


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    """Raise a one-line ConfigError ``key: expected ..., got ...`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the tracks, their tags and the 16 kHz waveform cache are.

    ``dataset_dir`` is an MTG-Jamendo-layout folder (``splits/split-N/autotagging_<tagset>-*.tsv`` and
    ``audio/``, what ``focaltag data download --out`` writes) or an own dataset (a ``tracks.csv`` with
    ``path,tags,split``; ``tagset``, ``tag_category`` and ``split`` do not apply to it). ``tagset`` picks one of
    MTG-Jamendo's four tag sets (null: moodtheme, the paper's); its vocabulary is the tags of its split files,
    optionally narrowed by ``tag_category`` (a tag prefix). ``train_tsv`` / ``validation_tsv`` override the split
    files. ``extra_train`` lists more training lists (the authors'
    ``TRACK_ID PATH TAGS`` format or official TSVs) whose audio lies under ``extra_audio_dir``. Every training
    and validation track must be in the cache at ``cache_dir`` (default ``<dataset_dir>/cache``); with
    ``auto_prepare`` a missing cache is built from the audio first.
    """

    dataset_dir: Path | None = None
    tagset: Literal["moodtheme", "genre", "instrument", "top50tags"] | None = None  # null = moodtheme
    split: int = 0
    train_tsv: Path | None = None
    validation_tsv: Path | None = None
    extra_train: tuple[Path, ...] = ()
    extra_audio_dir: Path | None = None
    audio_dir: Path | None = None  # default <dataset_dir>/audio
    cache_dir: Path | None = None  # default <dataset_dir>/cache
    tag_category: str | None = None  # optional extra filter: only the tag set's tags under this prefix
    auto_prepare: bool = True
    prepare_workers: int = 2

    def __post_init__(self) -> None:
        _check(self.split >= 0, "data.split", "an integer >= 0", self.split)
        _check(self.prepare_workers >= 1, "data.prepare_workers", "an integer >= 1", self.prepare_workers)


_RESNETS = ("short_chunk_resnet", "short_chunk_resnet_won2020")
# model argument -> the architectures that take it (None: every architecture)
MODEL_ARGUMENTS: dict[str, tuple[str, ...] | None] = {
    "variant": _RESNETS,
    "width": _RESNETS,
    "hidden_size": ("crnn",),
    "backend_channels": ("musicnn",),
    "dense_channels": ("musicnn",),
    "drop_rate": None,
}
_RESNET_DEFAULTS: dict[str, dict[str, Any]] = {"short_chunk_resnet": {"variant": "paper", "width": 128},
                                                 "short_chunk_resnet_won2020": {"width": 128}}


@dataclass(frozen=True)
class ModelConfig:
    """Which network (``model.name``, a ``focaltag.create_model`` name), its arguments, and optional
    pretrained weights to start from.

    Arguments left null take the architecture's default. An argument the chosen architecture does not have
    (``width`` for ``fcn``) is an error, so a config cannot silently train something other than it says.
    The input chunk length comes from the architecture (``pretrained_cfg.chunk_samples``): 4.6 s for
    ``short_chunk_resnet`` (3.69 s with ``variant: won2020``), 29 s for ``fcn`` and ``crnn``, 3 s for
    ``musicnn``.
    """

    name: str = "short_chunk_resnet"  # short_chunk_resnet | short_chunk_resnet_won2020 | fcn | crnn | musicnn
    variant: Literal["paper", "won2020"] | None = None  # short-chunk ResNet: 4.6 s (paper, default) or 3.69 s
    width: int | None = None  # short-chunk ResNet: channels of the first block (default 128)
    hidden_size: int | None = None  # crnn: GRU state size (default 32)
    backend_channels: int | None = None  # musicnn: back-end channels (default 64; 512 is the MSD size)
    dense_channels: int | None = None  # musicnn: hidden dense layer (default 200; 500 is the MSD size)
    drop_rate: float | None = None  # every architecture: dropout before the output layer (default 0.5)
    init_from: str | None = None  # checkpoint or catalogue name whose matching entries are loaded

    def __post_init__(self) -> None:
        from focaltag.errors import ModelError
        from focaltag.models._registry import model_entrypoint

        try:
            model_entrypoint(self.name)
        except ModelError as err:
            raise ConfigError(f"model.name: {err}") from None
        for key, archs in MODEL_ARGUMENTS.items():
            if getattr(self, key) is not None and archs is not None and self.name not in archs:
                raise ConfigError(f"model.{key} applies to {' / '.join(archs)} only, not to model.name "
                                  f"{self.name!r}; remove model.{key}")
        for key, value in _RESNET_DEFAULTS.get(self.name, {}).items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)  # frozen: fill the ResNet's documented defaults once
        for key in ("width", "hidden_size", "backend_channels", "dense_channels"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"model.{key}", "null or an integer >= 1", value)
        _check(self.drop_rate is None or 0 <= self.drop_rate < 1, "model.drop_rate", "null or a number in [0, 1)",
               self.drop_rate)

    def model_kwargs(self) -> dict[str, Any]:
        """The architecture arguments that are set, for ``create_model(name, n_tags=..., **model_kwargs())``."""
        return {key: getattr(self, key) for key in MODEL_ARGUMENTS if getattr(self, key) is not None}


@dataclass(frozen=True)
class LossConfig:
    """``focaltag.build_loss(name, class_counts, **hyper)``; hyper e.g. ``{gamma: 2, alpha: 0.25}``."""

    name: str = "bce"  # one of focaltag.training.loss_registry.LOSSES
    hyper: dict[str, Any] = field(default_factory=dict)
    # output-bias init: auto = the loss's own (-log((1-pi)/pi), pi=.01, for focal / cb_focal, as Lin et al.),
    # class_prior = log(p_c / (1 - p_c)) from the training tag frequencies (any loss), none = PyTorch's default
    bias_init: Literal["auto", "class_prior", "none"] = "auto"

    def __post_init__(self) -> None:
        _check(self.name in LOSSES, "loss.name", f"one of {', '.join(LOSSES)}", self.name)


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


def legacy_precision(bf16: bool | None, cpu_bf16: bool | None) -> Precision:
    """``runtime.precision`` for a 0.2 config's ``runtime.bf16`` (CUDA, default true) and ``runtime.cpu_bf16``
    (CPUs, default false); logs the deprecation once per config."""
    cuda, cpu = True if bf16 is None else bool(bf16), bool(cpu_bf16)
    precision: Precision = "bf16" if cpu else ("auto" if cuda else "fp32")
    if cpu and not cuda:
        logger.warning("runtime.bf16: false with runtime.cpu_bf16: true has no single precision; using "
                       "runtime.precision: bf16 (bf16 on CUDA too)")
    logger.warning("runtime.bf16 / runtime.cpu_bf16 are deprecated; write runtime.precision: %s instead", precision)
    return precision


@dataclass(frozen=True)
class RuntimeConfig:
    """Hardware and bookkeeping: device, loader workers, precision/layout/compile switches, step limits."""

    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N | mps
    num_workers: int = 4
    # auto: bf16 autocast on CUDA GPUs that support it, float32 on CPUs (bf16 changes the numerics there);
    # bf16: also on CPUs that run it fast (AMX, or AVX512-BF16 that measured faster: focaltag.precision),
    # else float32;
    # fp32: never. See bench/train.py for the speed.
    precision: Precision = "auto"
    bf16: bool | None = field(default=None, metadata={"deprecated": True})  # old spelling: precision
    cpu_bf16: bool | None = field(default=None, metadata={"deprecated": True})  # old spelling: precision
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward
    deterministic: bool = False  # deterministic kernels (bit-exact reruns and resumes on GPUs; slower)
    sync_batchnorm: bool = True  # SyncBatchNorm under multi-GPU DDP (CUDA only)
    max_steps_per_epoch: int | None = None  # cap an epoch (demos, smoke tests)
    max_steps: int | None = None  # stop (and save last.pt) after this many steps in total; --resume continues
    checkpoint_every_steps: int | None = None  # also save last.pt mid-epoch every N steps
    log_every_steps: int = 10  # TensorBoard train-loss interval

    def __post_init__(self) -> None:
        if self.bf16 is not None or self.cpu_bf16 is not None:  # 0.2 configs: two booleans
            object.__setattr__(self, "precision", legacy_precision(self.bf16, self.cpu_bf16))
            object.__setattr__(self, "bf16", None)
            object.__setattr__(self, "cpu_bf16", None)
        _check(self.precision in PRECISIONS, "runtime.precision", " | ".join(PRECISIONS), self.precision)
        _check(self.num_workers >= 0, "runtime.num_workers", "an integer >= 0", self.num_workers)
        _check(self.log_every_steps >= 1, "runtime.log_every_steps", "an integer >= 1", self.log_every_steps)
        for key in ("max_steps_per_epoch", "max_steps", "checkpoint_every_steps"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"runtime.{key}", "null or an integer >= 1", value)
        check_device_name(self.device, option="runtime.device")  # the spelling; availability at train time


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

    def __post_init__(self) -> None:
        check_seed(self.seed)

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


def override_model_name(overrides: Sequence[str]) -> str | None:
    """The last ``model.name=X`` among ``--set`` overrides, else None."""
    from focaltag.config import parse_override

    name = None
    for text in overrides:
        keys, value = parse_override(text)
        if list(keys) == ["model", "name"]:
            name = value
    return None if name is None else str(name)


def drop_arguments_of_replaced_model(data: dict[str, Any], new_name: str | None) -> dict[str, Any]:
    """``data`` without the model arguments that ``new_name`` does not take, when it replaces the mapping's
    architecture (``width: 16`` of a ResNet config under ``--set model.name=fcn``).

    Apply it to the base mapping before the overrides: the same key given again with the new name is then
    still refused by :class:`ModelConfig`.
    """
    section = data.get("model") if isinstance(data, dict) else None
    if new_name is None or not isinstance(section, dict) or section.get("name", "short_chunk_resnet") == new_name:
        return data
    kept = {k: v for k, v in section.items()
            if k not in MODEL_ARGUMENTS or MODEL_ARGUMENTS[k] is None or new_name in (MODEL_ARGUMENTS[k] or ())}
    return {**data, "model": kept}


def load_train_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start from the defaults when ``path`` is None), apply ``key=value``
    overrides, and validate."""
    data = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    try:
        data = drop_arguments_of_replaced_model(data, override_model_name(overrides))
        data = apply_overrides(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return train_config_from_dict(data, source=source)
