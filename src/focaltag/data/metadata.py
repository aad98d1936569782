"""Track metadata: the official MTG-Jamendo TSV, the authors' extra-list format, plain CSV, and tag vocabularies."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from focaltag.data.tags import short_tag
from focaltag.errors import DataError

__all__ = [
    "TrackRecord",
    "TagVocabulary",
    "read_tracks",
    "read_tag_list",
    "tag_counts",
    "merge_track_lists",
    "split_files",
    "SUBSETS",
    "OFFICIAL_COLUMNS",
]

OFFICIAL_COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
SUBSETS = ("train", "validation", "test")
MetadataFormat = Literal["auto", "official", "list", "csv"]


@dataclass(frozen=True)
class TrackRecord:
    """One annotated track; ``tags`` are full names (``mood/theme---happy``) in file order."""

    track_id: str
    path: str
    tags: tuple[str, ...]
    artist_id: str | None = None
    album_id: str | None = None
    duration: float | None = None
    split: str | None = None  # train | validation | test, from a CSV's ``split`` column (own datasets)


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"metadata file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a metadata file (.tsv or .csv)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected MTG-Jamendo TSV or path,tags CSV") from None
    return text.splitlines()  # handles CRLF (the official files) and LF


def _detect_format(path: Path, header: str) -> MetadataFormat:
    cols = [c.strip() for c in header.split("\t")]
    if tuple(cols[: len(OFFICIAL_COLUMNS)]) == OFFICIAL_COLUMNS:
        return "official"
    if cols[:3] == ["TRACK_ID", "PATH", "TAGS"]:
        return "list"
    if path.suffix.lower() == ".csv" or header.replace(" ", "").lower().startswith("path,tags"):
        return "csv"
    if cols and cols[0] == "TRACK_ID":
        missing = [c for c in OFFICIAL_COLUMNS if c not in cols]
        raise DataError(f"{path} line 1: header lacks the column(s) {', '.join(missing)}; expected the official "
                        f"columns {' '.join(OFFICIAL_COLUMNS)} or the list format 'TRACK_ID PATH TAGS'")
    raise DataError(
        f"{path} line 1: unknown header {header[:60]!r}; expected the official columns "
        f"{' '.join(OFFICIAL_COLUMNS)}, the list format 'TRACK_ID PATH TAGS', or a 'path,tags' CSV"
    )


def _track_exists(audio_dir: Path, rel: str) -> bool:
    """A metadata path ``48/948.mp3`` is present as itself or as the audio-low name ``48/948.low.mp3``."""
    p = audio_dir / rel
    return p.is_file() or p.with_name(p.stem + ".low" + p.suffix).is_file()


def read_tracks(path: str | os.PathLike[str], *, fmt: MetadataFormat = "auto",
                allow_untagged: bool = False, vocab: TagVocabulary | None = None,
                audio_dir: str | os.PathLike[str] | None = None) -> list[TrackRecord]:
    """Parse a metadata file into records; errors name the file and line.

    Formats: ``official`` (TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS..., tab-separated, CRLF or LF),
    ``list`` (the paper authors' ``TRACK_ID PATH TAGS...`` with header; stray empty tags ignored) and
    ``csv`` (``path,tags`` with ``;``-separated tags; the track id is the path unless a ``track_id`` column
    exists). With ``vocab`` every tag must belong to it; with ``audio_dir`` every path must exist under it.
    """
    path = Path(path)
    if fmt not in ("auto", "official", "list", "csv"):
        raise DataError(f"fmt must be one of auto, official, list, csv; got {fmt!r}")
    lines = _lines(path)
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty file or empty first line; expected a header row and one track per line")
    if fmt == "auto":
        fmt = _detect_format(path, lines[0])
    rows = _read_csv(path) if fmt == "csv" else _read_tsv(path, lines, fmt)
    audio_root = Path(audio_dir) if audio_dir is not None else None
    if audio_root is not None and not audio_root.is_dir():
        raise DataError(f"audio folder not found: {audio_root}; pass the folder the PATH column is relative to")
    seen: dict[str, int] = {}
    for lineno, rec in rows:
        if rec.track_id in seen:
            raise DataError(f"{path} line {lineno}: track id {rec.track_id!r} already appears on line "
                            f"{seen[rec.track_id]}; remove the duplicate row")
        seen[rec.track_id] = lineno
        if not rec.tags and not allow_untagged:
            raise DataError(f"{path} line {lineno}: track {rec.track_id} has no tags; every track needs at "
                            "least one tag")
        if vocab is not None:
            for tag in rec.tags:
                if tag not in vocab._index:
                    raise DataError(f"{path} line {lineno}: track {rec.track_id} has the unknown tag {tag!r}"
                                    f"{vocab._suggest(tag)}; the vocabulary has {len(vocab)} tags")
        if audio_root is not None and not _track_exists(audio_root, rec.path):
            raise DataError(f"{path} line {lineno}: audio file {audio_root / rec.path} does not exist; "
                            "check the PATH column or the audio folder")
    return [rec for _, rec in rows]


def _read_tsv(path: Path, lines: list[str], fmt: str) -> list[tuple[int, TrackRecord]]:
    first_tag = 5 if fmt == "official" else 2
    names = OFFICIAL_COLUMNS[:first_tag] if fmt == "official" else ("TRACK_ID", "PATH")
    id_col, path_col = 0, (3 if fmt == "official" else 1)
    rows: list[tuple[int, TrackRecord]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < first_tag:
            raise DataError(f"{path} line {lineno}: expected at least {first_tag} tab-separated columns "
                            f"({' '.join(names)}), got {len(cols)}")
        track_id, rel = cols[id_col].strip(), cols[path_col].strip()
        if not track_id:
            raise DataError(f"{path} line {lineno}: empty TRACK_ID")
        if not rel:
            raise DataError(f"{path} line {lineno}: track {track_id} has an empty PATH")
        tags = tuple(t.strip() for t in cols[first_tag:] if t.strip())
        if fmt == "official":
            try:
                duration = float(cols[4])
            except ValueError:
                raise DataError(f"{path} line {lineno}: DURATION {cols[4]!r} is not a number") from None
            if not duration >= 0:  # also rejects NaN
                raise DataError(f"{path} line {lineno}: DURATION {cols[4]!r} must be a non-negative number")
            rows.append((lineno, TrackRecord(track_id, rel, tags, cols[1].strip(), cols[2].strip(), duration)))
        else:
            rows.append((lineno, TrackRecord(track_id, rel, tags)))
    return rows


def _read_csv(path: Path) -> list[tuple[int, TrackRecord]]:
    """``path,tags`` CSV rows; optional columns ``track_id``, ``artist_id``, ``album_id``, ``duration`` and
    ``split`` (train | validation | test, as in an own dataset's ``tracks.csv``)."""
    rows: list[tuple[int, TrackRecord]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "path" not in fields or "tags" not in fields:
            missing = [c for c in ("path", "tags") if c not in fields]
            raise DataError(f"{path} line 1: a CSV needs the columns 'path' and 'tags'; missing "
                            f"{', '.join(repr(c) for c in missing)} in {reader.fieldnames}")
        try:
            for row in reader:
                lineno = reader.line_num
                rec = _csv_record(path, lineno, row, len(fields))
                if rec is not None:
                    rows.append((lineno, rec))
        except csv.Error as err:
            raise DataError(f"{path} line {reader.line_num}: not valid CSV ({err}); quote fields that hold "
                            "commas or quotes") from None
    return rows


def _csv_record(path: Path, lineno: int, raw: dict[Any, Any], n_fields: int) -> TrackRecord | None:
    """One CSV row as a record (None for a blank row); a malformed row raises DataError naming the line."""
    if raw.get(None):  # DictReader puts values beyond the header under the key None
        extra = len(raw[None])
        raise DataError(f"{path} line {lineno}: {n_fields + extra} fields but the header has {n_fields}; "
                        "quote a field that holds a comma")
    row = {k.strip().lower(): (v or "") for k, v in raw.items() if isinstance(k, str)}
    if not any(v.strip() for v in row.values()):
        return None
    p = row["path"].strip()
    if not p:
        raise DataError(f"{path} line {lineno}: empty path")
    tags = tuple(t.strip() for t in row["tags"].split(";") if t.strip())
    duration = None
    if row.get("duration", "").strip():
        try:
            duration = float(row["duration"])
        except ValueError:
            raise DataError(f"{path} line {lineno}: duration {row['duration']!r} is not a number") from None
    split = row.get("split", "").strip().lower() or None
    if "split" in row and split not in SUBSETS:
        raise DataError(f"{path} line {lineno}: split {row['split']!r} must be one of {', '.join(SUBSETS)}")
    return TrackRecord(row.get("track_id", "").strip() or p, p, tags,
                       artist_id=row.get("artist_id", "").strip() or None,
                       album_id=row.get("album_id", "").strip() or None, duration=duration, split=split)


def read_tag_list(path: str | os.PathLike[str]) -> list[str]:
    """Read a tag list file: one tag per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    tags = [ln.strip() for ln in _lines(path) if ln.strip() and not ln.lstrip().startswith("#")]
    if not tags:
        raise DataError(f"{path}: no tags found; expected one tag name per line")
    if len(set(tags)) != len(tags):
        dup = next(t for t in tags if tags.count(t) > 1)
        raise DataError(f"{path}: tag {dup!r} is listed twice")
    return tags


class TagVocabulary:
    """An ordered tag set; the canonical order is sorted full tag names (the published matrices' column order)."""

    def __init__(self, tags: Iterable[str], *, sort: bool = True) -> None:
        tags = list(dict.fromkeys(tags))
        self.tags: tuple[str, ...] = tuple(sorted(tags) if sort else tags)
        if not self.tags:
            raise DataError("a tag vocabulary needs at least one tag")
        self._index = {t: i for i, t in enumerate(self.tags)}
        self._short = {short_tag(t): i for i, t in enumerate(self.tags)}

    @classmethod
    def from_tracks(cls, tracks: Iterable[TrackRecord], *, category: str | None = None) -> TagVocabulary:
        """Every tag that occurs in ``tracks`` (optionally only those under ``category``), sorted."""
        tags = {t for rec in tracks for t in rec.tags}
        vocab = cls(tags)
        return vocab.subset(category) if category else vocab

    def __len__(self) -> int:
        return len(self.tags)

    def __iter__(self):
        return iter(self.tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self._index or tag in self._short

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TagVocabulary) and self.tags == other.tags

    def __repr__(self) -> str:
        return f"TagVocabulary({len(self)} tags)"

    @property
    def short_names(self) -> list[str]:
        return [short_tag(t) for t in self.tags]

    def index(self, tag: str) -> int:
        """Column of ``tag`` (full or short name); unknown tags raise DataError with a suggestion."""
        if tag in self._index:
            return self._index[tag]
        if tag in self._short:
            return self._short[tag]
        raise DataError(f"unknown tag {tag!r}{self._suggest(tag)}; the vocabulary has {len(self)} tags")

    def _suggest(self, tag: str) -> str:
        """`` (did you mean 'x'?)`` for the closest known tag, or an empty string."""
        import difflib

        if short_tag(tag) in self._short:
            return f" (did you mean {self.tags[self._short[short_tag(tag)]]!r}?)"
        close = difflib.get_close_matches(short_tag(tag), list(self._short), n=1)
        return f" (did you mean {self.tags[self._short[close[0]]]!r}?)" if close else ""

    def subset(self, selector: str | Sequence[str]) -> TagVocabulary:
        """Tags under a category prefix (``mood/theme``, ``genre``, ``instrument``) or an explicit tag list."""
        if isinstance(selector, str):
            prefix = selector if selector.endswith("---") else selector + "---"
            picked = [t for t in self.tags if t.startswith(prefix)]
            if not picked:
                cats = sorted({t.split("---")[0] for t in self.tags if "---" in t})
                raise DataError(f"no tag has the category {selector!r}; categories present: {', '.join(cats)}")
            return TagVocabulary(picked)
        return TagVocabulary(self.tags[self.index(t)] for t in selector)

    def encode(self, tracks: Sequence[TrackRecord], *, unknown: Literal["error", "ignore"] = "error",
               source: str | None = None, dtype: type = np.int64) -> np.ndarray:
        """Multi-hot matrix (n_tracks, n_tags) in vocabulary order."""
        out: np.ndarray = np.zeros((len(tracks), len(self)), dtype=dtype)
        for i, rec in enumerate(tracks):
            for tag in rec.tags:
                j = self._index.get(tag)
                if j is None:
                    if unknown == "ignore":
                        continue
                    where = f"{source}: " if source else ""
                    raise DataError(f"{where}track {rec.track_id} has tag {tag!r}, which is not in the "
                                    f"{len(self)}-tag vocabulary; filter the tracks or extend the vocabulary")
                out[i, j] = 1
        return out


def tag_counts(tracks: Iterable[TrackRecord], vocab: TagVocabulary) -> np.ndarray:
    """Number of tracks carrying each vocabulary tag (tags outside the vocabulary are ignored)."""
    counts = np.zeros(len(vocab), dtype=np.int64)
    for rec in tracks:
        for tag in set(rec.tags):
            j = vocab._index.get(tag)
            if j is not None:
                counts[j] += 1
    return counts


def merge_track_lists(*lists: Sequence[TrackRecord], names: Sequence[str] | None = None) -> list[TrackRecord]:
    """Concatenate track lists (e.g. split-0 train + an extra list); a track id in two lists is an error."""
    names = list(names) if names is not None else [f"list {i + 1}" for i in range(len(lists))]
    if len(names) != len(lists):
        raise DataError(f"merge_track_lists: names has {len(names)} entries but {len(lists)} lists were given")
    owner: dict[str, str] = {}
    merged: list[TrackRecord] = []
    for name, records in zip(names, lists, strict=True):
        for rec in records:
            if rec.track_id in owner:
                raise DataError(f"track id {rec.track_id!r} is in both {owner[rec.track_id]} and {name}; "
                                "extra training lists must not repeat tracks")
            owner[rec.track_id] = name
            merged.append(rec)
    return merged


def split_files(root: str | os.PathLike[str], split: int = 0,
                dataset: str = "autotagging_moodtheme") -> dict[str, Path]:
    """Paths of an official split's train/validation/test TSVs under ``root`` (a folder holding ``splits/``
    or a ``split-N`` folder itself)."""
    root = Path(root)
    candidates = [root / "splits" / f"split-{split}", root / f"split-{split}", root]
    for folder in candidates:
        files = {s: folder / f"{dataset}-{s}.tsv" for s in SUBSETS}
        if all(f.is_file() for f in files.values()):
            return files
    raise DataError(f"no split-{split} files ({dataset}-train/validation/test.tsv) under {root}; "
                    "point at the dataset folder that holds splits/split-N/")
