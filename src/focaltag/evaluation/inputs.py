"""Reading evaluation inputs: ``.npy`` matrices and ground truth built from a split TSV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from focaltag.errors import DataError, EvaluationError, first_line

__all__ = ["load_matrix", "ground_truth_from_tsv", "load_ground_truth"]


def load_matrix(path: str | os.PathLike[str], *, what: str = "matrix") -> np.ndarray:
    """Load a 2-D ``.npy`` matrix; a missing, unreadable or non-2-D file raises EvaluationError naming it."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{what} file not found: {path}")
    if path.is_dir():
        raise EvaluationError(f"{what} path {path} is a folder; pass a .npy file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise EvaluationError(f"{what} file {path} is not a readable .npy matrix ({first_line(err)})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise EvaluationError(f"{what} file {path} is an .npz archive; pass a single .npy matrix")
    if arr.ndim != 2:
        raise EvaluationError(f"{what} file {path} holds shape {arr.shape}; expected 2-D (n_tracks, n_tags)")
    return arr


def ground_truth_from_tsv(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Multi-hot ground truth of a split TSV: rows in file order, columns in the canonical sorted tag order
    (the 56 mood/theme tags when the file's tags are mood/theme, else the file's own tags, sorted)."""
    from focaltag.data.metadata import TagVocabulary, read_tracks
    from focaltag.data.tags import MOODTHEME_PREFIX, MOODTHEME_TAGS

    tracks = read_tracks(path)
    tags = {t for rec in tracks for t in rec.tags}
    vocab: TagVocabulary | None
    if tags and all(t.startswith(MOODTHEME_PREFIX) for t in tags):
        vocab = TagVocabulary(MOODTHEME_TAGS)
    else:
        vocab = TagVocabulary(tags) if tags else None
    if vocab is None:
        raise DataError(f"{path}: no tags found; expected a split TSV with tag columns")
    return vocab.encode(tracks, source=str(path)), list(vocab.tags)


def load_ground_truth(path: str | os.PathLike[str], *, what: str = "ground truth") -> tuple[np.ndarray,
                                                                                           list[str] | None]:
    """Ground truth from a ``.npy`` matrix (no tag names) or a split ``.tsv`` (with its tag names)."""
    if Path(path).suffix.lower() in (".tsv", ".csv"):
        return ground_truth_from_tsv(path)
    return load_matrix(path, what=what), None
