"""Inference: tag whole tracks with one model or an ensemble, write results, export to ONNX, predict splits.

Names are re-exported lazily so ``import focaltag.inference`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "Tagger": "focaltag.inference.tagger",
    "TagResult": "focaltag.inference.tagger",
    "TagFailure": "focaltag.inference.tagger",
    "save_ensemble": "focaltag.inference.ensemble",
    "read_ensemble": "focaltag.inference.ensemble",
    "load_members": "focaltag.inference.ensemble",
    "get_writer": "focaltag.inference.writers",
    "result_to_dict": "focaltag.inference.writers",
    "plot_taggram": "focaltag.inference.taggram",
    "export_onnx": "focaltag.inference.export",
    "predict_split": "focaltag.inference.predict",
    "save_predictions": "focaltag.inference.predict",
    "collect_audio": "focaltag.inference.files",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'focaltag.inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
