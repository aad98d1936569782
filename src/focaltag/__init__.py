"""focaltag: imbalance-robust multi-label music tagging (short-chunk ResNet + focal-family losses + ensembles).

The public API is re-exported here lazily, so ``import focaltag`` (and ``focaltag --help``) stays fast and
torch is imported only when a model-side name is first used.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports
from focaltag._version import __version__
from focaltag.errors import (
    AudioDecodeError,
    CheckpointError,
    ConfigError,
    DataError,
    DownloadError,
    EvaluationError,
    FocaltagError,
    ModelError,
    TrainingDivergedError,
)

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # data
    "TrackRecord": "focaltag.data.metadata",
    "TagVocabulary": "focaltag.data.metadata",
    "read_tracks": "focaltag.data.metadata",
    "synthesize_dataset": "focaltag.data.synth",
    "dataset_stats": "focaltag.data.stats",
    "audit_split": "focaltag.data.audit",
    "download_dataset": "focaltag.data.download",
    # audio
    "load_audio": "focaltag.audio.decode",
    "LogMelSpectrogram": "focaltag.audio.features",
    "iter_audio_blocks": "focaltag.audio.decode",
    "WaveformCache": "focaltag.audio.cache",
    "prepare_cache": "focaltag.audio.cache",
    # models
    "create_model": "focaltag.models",
    "list_models": "focaltag.models",
    "load_model": "focaltag.models",
    "save_model": "focaltag.models",
    "ShortChunkResNet": "focaltag.models",
    # training
    "build_loss": "focaltag.training.losses",
    "ClassAwareSampler": "focaltag.training.samplers",
    "TrainConfig": "focaltag.training.config",
    "train": "focaltag.training.loop",
    # evaluation
    "evaluate": "focaltag.evaluation",
    "pr_auc_macro": "focaltag.evaluation",
    "roc_auc_macro": "focaltag.evaluation",
    "paired_bootstrap": "focaltag.evaluation",
    "mean_ensemble": "focaltag.evaluation",
    # inference
    "Tagger": "focaltag.inference",
    "InferenceOptions": "focaltag.inference",
    "Predictor": "focaltag.inference",
    "configure_runtime": "focaltag.inference",
    "resolve_model": "focaltag.models.resolve",
    "TagResult": "focaltag.inference",
    "save_ensemble": "focaltag.inference",
    "export_onnx": "focaltag.inference",
    "predict_split": "focaltag.inference",
    # library runs
    "Library": "focaltag.library.api",
}

__all__ = [
    "__version__",
    "FocaltagError",
    "ConfigError",
    "DataError",
    "AudioDecodeError",
    "DownloadError",
    "CheckpointError",
    "EvaluationError",
    "ModelError",
    "TrainingDivergedError",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
