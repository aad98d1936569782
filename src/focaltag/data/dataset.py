"""A dataset folder: the MTG-Jamendo layout (any of its four tag sets, five splits) or an own ``tracks.csv``.

Every command that takes ``--dataset-dir DIR`` (and a training config's ``data.dataset_dir``) opens the folder
here, so both layouts behave the same everywhere:

- **MTG-Jamendo layout** (what ``focaltag data download --out DIR`` writes): ``DIR/splits/split-N/
  autotagging_<tagset>-{train,validation,test}.tsv`` and the audio under ``DIR/audio/``. The vocabulary of a tag
  set is the set of tags in its split files (the same in every part and split).
- **Own dataset**: ``DIR/tracks.csv`` with the columns ``path``, ``tags`` (``;``-separated) and ``split``
  (train | validation | test), optionally ``track_id`` and ``artist_id``; the paths are relative to ``DIR``.
  There is one split; the vocabulary is every tag in the file; tag sets and tag categories do not apply.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from focaltag._io import write_text
from focaltag.data.metadata import SUBSETS, TagVocabulary, TrackRecord, read_tracks, split_files
from focaltag.data.tags import TAGSETS
from focaltag.errors import ConfigError, DataError

__all__ = [
    "TAGSETS",
    "DEFAULT_TAGSET",
    "TAGSET_CATEGORY",
    "TRACKS_CSV",
    "Dataset",
    "open_dataset",
    "is_own_dataset",
    "check_tagset",
    "split_file_name",
    "tagset_dataset",
]

log = logging.getLogger(__name__)

DEFAULT_TAGSET = "moodtheme"  # the paper's (MediaEval's) tag set
# the category prefix each tag set's tags carry (top-50 mixes genre, instrument and mood/theme tags)
TAGSET_CATEGORY: dict[str, str | None] = {"moodtheme": "mood/theme", "genre": "genre", "instrument": "instrument",
                                          "top50tags": None}
TRACKS_CSV = "tracks.csv"
_DERIVED = ".focaltag"
_TOLD: set[Path] = set()  # own datasets whose ignored tag-set settings were already reported (one info line)


def check_tagset(name: str | None, *, where: str = "--tagset") -> str:
    """``name`` if it is one of :data:`TAGSETS` (None means the default, mood/theme); else a ConfigError."""
    if name is None:
        return DEFAULT_TAGSET
    if name not in TAGSETS:
        raise ConfigError(f"{where}: unknown tag set {name!r}; choose one of {', '.join(TAGSETS)}")
    return name


def tagset_dataset(tagset: str) -> str:
    """File-name prefix of a tag set's split files: ``genre`` -> ``autotagging_genre``."""
    return f"autotagging_{check_tagset(tagset)}"


def split_file_name(tagset: str, part: str) -> str:
    """``autotagging_<tagset>-<part>.tsv`` as in the official repository's ``data/splits/split-N/``."""
    if part not in SUBSETS:
        raise ConfigError(f"part {part!r}: choose one of {', '.join(SUBSETS)}")
    return f"{tagset_dataset(tagset)}-{part}.tsv"


def is_own_dataset(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds a ``tracks.csv`` (an own dataset) rather than the MTG-Jamendo layout."""
    return (Path(root) / TRACKS_CSV).is_file()


@dataclass
class Dataset:
    """An opened dataset folder; ``tracks(part)`` and ``vocabulary()`` read the metadata once."""

    root: Path
    kind: Literal["mtg", "own"]
    tagset: str | None = None  # MTG layout only
    split: int | None = None  # MTG layout only
    tag_category: str | None = None  # MTG layout only: an extra filter on the tag set's tags
    files: dict[str, Path] = field(default_factory=dict)  # part -> metadata file
    _records: dict[str, list[TrackRecord]] = field(default_factory=dict, repr=False)
    _vocab: TagVocabulary | None = field(default=None, repr=False)

    @property
    def audio_dir(self) -> Path:
        """Where the metadata paths are relative to: ``DIR/audio`` (MTG layout) or ``DIR`` (tracks.csv)."""
        return self.root / "audio" if self.kind == "mtg" else self.root

    @property
    def label(self) -> str:
        """Short description for messages and reports."""
        if self.kind == "own":
            return f"{self.root / TRACKS_CSV}"
        return f"{self.root} ({self.tagset}, split-{self.split})"

    def _all_own(self) -> list[TrackRecord]:
        if "*" not in self._records:
            path = self.root / TRACKS_CSV
            records = read_tracks(path, fmt="csv")
            if records and all(r.split is None for r in records):
                raise DataError(f"{path} line 1: an own dataset's tracks.csv needs a 'split' column "
                                f"({', '.join(SUBSETS)}) beside 'path' and 'tags'")
            if not records:
                raise DataError(f"{path}: no tracks; expected one 'path,tags,split' row per track")
            self._records["*"] = records
        return self._records["*"]

    def tracks(self, part: str) -> list[TrackRecord]:
        """The tracks of ``part`` (train | validation | test) with all their tags, in file order."""
        if part not in SUBSETS:
            raise ConfigError(f"part {part!r}: choose one of {', '.join(SUBSETS)}")
        if part not in self._records:
            if self.kind == "own":
                self._records[part] = [r for r in self._all_own() if r.split == part]
            else:
                self._records[part] = read_tracks(self.files[part], allow_untagged=True)
        return self._records[part]

    def vocabulary(self) -> TagVocabulary:
        """MTG layout: the tags of the tag set's split files (under ``tag_category`` if set); own: every tag."""
        if self._vocab is None:
            if self.kind == "own":
                self._vocab = TagVocabulary.from_tracks(self._all_own())
            else:
                vocab = TagVocabulary.from_tracks(self.tracks("train"))
                if self.tag_category:
                    try:
                        vocab = vocab.subset(self.tag_category)
                    except DataError as err:
                        raise ConfigError(f"tag category {self.tag_category!r} does not fit tag set "
                                          f"{self.tagset!r} ({err}); drop the tag category or choose another "
                                          "tag set") from None
                self._vocab = vocab
        return self._vocab

    def part_file(self, part: str) -> Path:
        """A metadata file listing exactly the tracks of ``part``, for tools that read a split file.

        MTG layout: the official split file. Own dataset: a derived ``TRACK_ID PATH TAGS`` list written under
        ``DIR/.focaltag/`` (or a temporary folder when ``DIR`` is read-only), rewritten only when it changes.
        """
        if self.kind == "mtg":
            if part not in self.files:
                raise ConfigError(f"part {part!r}: choose one of {', '.join(SUBSETS)}")
            return self.files[part]
        tracks = self.tracks(part)
        if not tracks:
            raise DataError(f"{self.root / TRACKS_CSV}: no track has split {part!r}; every part needs tracks")
        rows = ["TRACK_ID\tPATH\tTAGS"] + ["\t".join([r.track_id, r.path, *r.tags]) for r in tracks]
        text = "\n".join(rows) + "\n"
        for folder in (self.root / _DERIVED, _fallback_dir(self.root)):
            path = folder / f"tracks-{part}.tsv"
            try:
                if not (path.is_file() and path.read_text(encoding="utf-8") == text):
                    write_text(path, text)
                return path
            except OSError:
                continue
        raise DataError(f"cannot write the {part} track list of {self.root}; make the folder writable")


def _fallback_dir(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"focaltag-{digest}"


def open_dataset(root: str | os.PathLike[str], *, tagset: str | None = None, split: int | None = None,
                 tag_category: str | None = None, where: str = "--tagset") -> Dataset:
    """Open a dataset folder of either layout (see the module docstring).

    ``tagset`` (default mood/theme), ``split`` (default 0) and ``tag_category`` apply to the MTG-Jamendo layout
    only; for a ``tracks.csv`` dataset they are ignored with one info line (``where`` names the setting).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}; fetch MTG-Jamendo there with `focaltag data download "
                        f"--tagset {tagset or DEFAULT_TAGSET} --out {root}`, or point at a folder with a {TRACKS_CSV}")
    if is_own_dataset(root):
        if (tagset is not None or tag_category is not None) and root.resolve() not in _TOLD:
            _TOLD.add(root.resolve())
            log.info("%s is an own dataset (%s): %s apply to the MTG-Jamendo layout only and are ignored; the "
                     "vocabulary is every tag in %s", root, TRACKS_CSV, where, TRACKS_CSV)
        return Dataset(root, "own")
    name = check_tagset(tagset, where="tag set")
    split = 0 if split is None else split
    if split < 0:
        raise ConfigError(f"split must be >= 0, got {split}")
    try:
        files = split_files(root, split, tagset_dataset(name))
    except DataError:
        raise DataError(f"no split-{split} files of tag set {name} (splits/split-{split}/"
                        f"{split_file_name(name, 'train')} ...) and no {TRACKS_CSV} in {root}; fetch them with "
                        f"`focaltag data download --tagset {name} --metadata-only --out {root}`, or write a "
                        f"{TRACKS_CSV} (path,tags,split) for an own dataset") from None
    return Dataset(root, "mtg", tagset=name, split=split, tag_category=tag_category, files=files)
