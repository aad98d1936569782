"""What inference needs to know about a model besides its weights: tag names, sample rate, chunk length.

Shared by the ensemble folder format (:mod:`focaltag.models.ensemble`), the torch and ONNX tagger members, and
the checks that ensemble members agree; it imports nothing heavy, so each of them can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from focaltag.errors import ModelError

if TYPE_CHECKING:
    from focaltag.models.resnet import PretrainedCfg

__all__ = ["ModelMeta", "model_meta", "check_same_input", "cfg_of"]


def cfg_of(model: Any) -> PretrainedCfg:
    """A focaltag model's ``pretrained_cfg``, typed (``nn.Module`` attribute access is untyped to a checker)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ModelError(f"{type(model).__name__} has no pretrained_cfg; build models with "
                         "focaltag.create_model or load them with focaltag.load_model")
    return cfg


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs to know about a model besides its weights."""

    tag_names: tuple[str, ...]
    sample_rate: int
    chunk_samples: int


def model_meta(model: Any) -> ModelMeta:
    """Tag names, sample rate and chunk length from ``model.pretrained_cfg``."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ModelError(f"{type(model).__name__} has no pretrained_cfg; build models with "
                         "focaltag.create_model or load them with focaltag.load_model")
    tags = tuple(getattr(cfg, "tag_names", None) or ())
    if not tags:
        raise ModelError("the model has no tag names (pretrained_cfg.tag_names is empty); "
                         "pass tag_names= to create_model")
    return ModelMeta(tags, int(cfg.sample_rate), int(cfg.chunk_samples))


def check_same_input(metas: Sequence[ModelMeta], names: Sequence[str]) -> None:
    """Raise ModelError unless all ensemble members share tag list, sample rate and chunk length."""
    first = metas[0]
    for meta, name in zip(metas[1:], names[1:], strict=True):
        if meta.tag_names != first.tag_names:
            diff = sorted(set(meta.tag_names) ^ set(first.tag_names))
            what = f"they differ in {', '.join(diff[:5])}" if diff else "same tags in another order"
            raise ModelError(f"ensemble members need identical tag lists: {name} has {len(meta.tag_names)} tags, "
                             f"{names[0]} has {len(first.tag_names)} ({what})")
        if (meta.sample_rate, meta.chunk_samples) != (first.sample_rate, first.chunk_samples):
            raise ModelError(f"ensemble members need the same input: {name} takes {meta.chunk_samples} samples at "
                             f"{meta.sample_rate} Hz, {names[0]} takes {first.chunk_samples} at {first.sample_rate} Hz")
