"""Tagging models: a timm-style registry, the short-chunk ResNet, and checkpoint loading/saving/conversion.

Example:
    >>> from focaltag.models import create_model, list_models
    >>> list_models("short_chunk_*")
    ['short_chunk_resnet', 'short_chunk_resnet_won2020']
    >>> model = create_model("short_chunk_resnet", n_tags=56, variant="paper")
    >>> create_model("fcn", n_tags=50).pretrained_cfg.chunk_samples  # Won et al. (2020): also crnn, musicnn
    464000
"""

from __future__ import annotations

from focaltag.models import head, resnet, won2020  # noqa: F401  (registers the architectures)
from focaltag.models._checkpoint import (
    CHECKPOINT_VERSION,
    convert_reference_state_dict,
    model_checkpoint,
    read_checkpoint,
    resolve_checkpoint_path,
    save_model,
    unwrap_model,
)
from focaltag.models._checkpoint import (
    load_model as load_checkpoint,
)
from focaltag.models._factory import create_model
from focaltag.models._registry import is_model, list_models, register_model
from focaltag.models.resnet import VARIANTS, PretrainedCfg, ShortChunkResNet
from focaltag.models.resolve import load_matching_weights, load_model  # also catalogue names and ensembles
from focaltag.models.won2020 import CRNN, FCN, Musicnn

__all__ = [
    "CHECKPOINT_VERSION",
    "CRNN",
    "FCN",
    "Musicnn",
    "PretrainedCfg",
    "ShortChunkResNet",
    "VARIANTS",
    "convert_reference_state_dict",
    "create_model",
    "is_model",
    "list_models",
    "load_checkpoint",
    "load_matching_weights",
    "load_model",
    "model_checkpoint",
    "read_checkpoint",
    "register_model",
    "resolve_checkpoint_path",
    "save_model",
    "unwrap_model",
]
