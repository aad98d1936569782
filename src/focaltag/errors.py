"""Exception hierarchy: every user-facing failure is a FocaltagError whose message is one line naming the thing and the fix."""

from __future__ import annotations

__all__ = [
    "FocaltagError",
    "ConfigError",
    "DataError",
    "AudioDecodeError",
    "DownloadError",
    "CheckpointError",
    "EvaluationError",
    "ModelError",
    "TrainingDivergedError",
]


class FocaltagError(Exception):
    """Base class; the CLI prints ``str(err)`` as a single line and exits non-zero."""

    exit_code: int = 2


class ConfigError(FocaltagError, ValueError):
    """A config file, config key or command-line option has a bad value."""


class DataError(FocaltagError, ValueError):
    """Metadata, splits, manifests or tags that cannot be used as given."""


class AudioDecodeError(FocaltagError):
    """An audio file is missing, empty, corrupt or not audio."""


class DownloadError(FocaltagError):
    """A download failed after its retries, or the server sent something that is not the archive."""


class CheckpointError(FocaltagError):
    """A checkpoint is missing, of an unknown layout, or does not match its tag list."""


class ModelError(FocaltagError, ValueError):
    """An unknown model name or incompatible model arguments."""


class EvaluationError(FocaltagError, ValueError):
    """Prediction / ground-truth matrices that cannot be scored (shape, NaN, non-binary labels)."""


class TrainingDivergedError(FocaltagError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1
