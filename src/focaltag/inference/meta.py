"""What inference needs to know about a model besides its weights, shared by the torch and ONNX members.

It sits below both ``ensemble`` (torch members, ensemble folders) and ``onnx_model`` (onnxruntime members), so
neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from focaltag.errors import ModelError

__all__ = ["ModelMeta", "model_meta"]


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
