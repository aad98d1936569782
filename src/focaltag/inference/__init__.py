"""Inference: tag whole tracks with one model or an ensemble, write results, export to ONNX, predict splits.

Names are re-exported lazily so ``import focaltag.inference`` does not import torch.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "Tagger": "focaltag.inference.tagger",
    "TagResult": "focaltag.inference.tagger",
    "TagFailure": "focaltag.inference.tagger",
    "save_ensemble": "focaltag.models.ensemble",
    "read_ensemble": "focaltag.models.ensemble",
    "load_members": "focaltag.inference.members",
    "get_writer": "focaltag.inference.writers",
    "result_to_dict": "focaltag.inference.writers",
    "plot_taggram": "focaltag.inference.taggram",
    "export_onnx": "focaltag.inference.export",
    "predict_split": "focaltag.inference.predict",
    "save_predictions": "focaltag.inference.predict",
    "collect_audio": "focaltag.inference.files",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
