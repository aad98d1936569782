"""Inference: run one model or an ensemble over whole tracks (probabilities, embeddings), export to ONNX,
predict splits. Writing results is :mod:`focaltag.outputs`'s job, library runs are :mod:`focaltag.library`'s.

Names are re-exported lazily so ``import focaltag.inference`` does not import torch.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "Tagger": "focaltag.inference.tagger",
    "InferenceOptions": "focaltag.inference.options",
    "Predictor": "focaltag.inference.predictor",
    "PrecisionPlan": "focaltag.inference.precision",
    "configure_runtime": "focaltag.inference.runtime",
    "TagResult": "focaltag.inference.tagger",
    "TagFailure": "focaltag.inference.tagger",
    "save_ensemble": "focaltag.models.ensemble",
    "read_ensemble": "focaltag.models.ensemble",
    "load_members": "focaltag.inference.members",
    "export_onnx": "focaltag.inference.export",
    "predict_split": "focaltag.inference.predict",
    "save_predictions": "focaltag.inference.predict",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
