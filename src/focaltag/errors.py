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
    "first_line",
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


def first_line(err: BaseException | str, *, limit: int | None = None, default: str | None = None) -> str:
    """The first line of an exception's message (or of a text), for one-line errors.

    Surrounding blank space is dropped; an empty message gives ``default`` (by default the exception's type
    name, ``""`` for a text); a line longer than ``limit`` characters is cut and ends with ``...``.
    """
    text = str(err).strip()
    if not text:
        return default if default is not None else ("" if isinstance(err, str) else type(err).__name__)
    line = text.splitlines()[0].rstrip()
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
