"""Your own labels for ``focaltag head train`` / ``head eval``: a CSV of tracks and the tags you gave them.

Two layouts are read (the header says which):

* ``path,tags``: one track per row with its tags separated by ``;`` (``warm-up;vocal``). A path may appear on
  several rows; its tags are the union of those rows.
* ``path,TAG1,TAG2,...``: one 0/1 column per tag. A path may appear on several rows only with the same values.

A ``.tsv`` file is read tab-separated, anything else comma-separated (UTF-8, a byte-order mark is allowed). A
relative path is relative to the labels file's folder, so a labels file travels with its music. Every problem
is a :class:`~focaltag.errors.DataError` of one line that names the row, column or tag and what to do; nothing is
written anywhere while reading.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focaltag.errors import DataError

__all__ = ["LabelSet", "read_labels", "check_paths_exist", "check_positives", "load_labels", "TAG_SEPARATOR",
           "PATH_COLUMNS", "TAGS_COLUMN", "SHOWN_MISSING"]

TAG_SEPARATOR = ";"
PATH_COLUMNS = ("path", "file")
"""Accepted names of the path column (any case)."""
TAGS_COLUMN = "tags"
"""The tags column of the ``path,tags`` layout (any case)."""
SHOWN_MISSING = 10
"""Missing files named in the error; the rest are counted."""
_LAYOUT_HINT = "a labels file has a path column and either a tags column (tags separated by ';') or one 0/1 " \
               "column per tag"


@dataclass(frozen=True)
class LabelSet:
    """Tracks and their tags: ``matrix[i, j]`` is 1 when track ``paths[i]`` has tag ``tag_names[j]``.

    ``paths`` are absolute (relative ones were joined to the labels file's folder) and unique; ``source`` is the
    labels file (``None`` when built in memory).
    """

    paths: tuple[str, ...]
    tag_names: tuple[str, ...]
    matrix: np.ndarray
    source: Path | None = None

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix)
        if m.shape != (len(self.paths), len(self.tag_names)):
            raise DataError(f"labels: matrix shape {m.shape} does not match {len(self.paths)} paths x "
                            f"{len(self.tag_names)} tags")
        if not np.isin(m, (0, 1)).all():
            raise DataError("labels: the matrix must hold only 0 and 1")
        if len(set(self.paths)) != len(self.paths):
            raise DataError("labels: paths must be unique")
        if len(set(self.tag_names)) != len(self.tag_names):
            raise DataError("labels: tag names must be unique")
        object.__setattr__(self, "matrix", m.astype(np.int8))

    @property
    def counts(self) -> dict[str, int]:
        """Positive tracks per tag, in tag order."""
        return {t: int(c) for t, c in zip(self.tag_names, self.matrix.sum(axis=0), strict=True)}

    def where(self) -> str:
        return str(self.source) if self.source is not None else "labels"

    def subset(self, keep: Sequence[bool] | np.ndarray) -> LabelSet:
        """The tracks where ``keep`` is true (same tags, same order)."""
        mask = np.asarray(keep, dtype=bool)
        if mask.shape != (len(self.paths),):
            raise DataError(f"labels: keep mask needs {len(self.paths)} entries, got shape {mask.shape}")
        return LabelSet(tuple(p for p, k in zip(self.paths, mask, strict=True) if k), self.tag_names,
                        self.matrix[mask], self.source)


def _read_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        raise DataError(f"labels file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a labels CSV ({_LAYOUT_HINT})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save the labels file as UTF-8") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err}); check its quoting") from None
    return rows


def _absolute(raw: str, folder: Path) -> str:
    """A labels path as an absolute, normalised path (relative ones are relative to the labels file)."""
    p = Path(os.path.expanduser(raw))
    return os.path.normpath(p if p.is_absolute() else folder / p)


def read_labels(path: str | os.PathLike[str]) -> LabelSet:
    """Parse a labels file (either layout, see the module docstring); checks its structure, not the files.

    A tag column without any positive is kept here (a held-out set may lack a tag); :func:`check_positives`
    refuses it for training.

    Raises:
        DataError: missing or unreadable file, no path column, unknown columns, an empty tag, a value other than
            0/1, rows of the wrong length, or conflicting duplicate rows.
    """
    source = Path(path)
    rows = [(n, r) for n, r in enumerate(_read_rows(source), start=1) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{source}: empty; {_LAYOUT_HINT}")
    header_no, header = rows[0]
    columns = [c.strip() for c in header]
    lower = [c.lower() for c in columns]
    path_cols = [i for i, c in enumerate(lower) if c in PATH_COLUMNS]
    if len(path_cols) != 1:
        found = ", ".join(repr(c) for c in columns[:6])
        what = "no path column" if not path_cols else "more than one path column"
        raise DataError(f"{source} line {header_no}: {what} (header: {found}); name exactly one column 'path'; "
                        f"{_LAYOUT_HINT}")
    pcol = path_cols[0]
    others = [i for i in range(len(columns)) if i != pcol]
    if not others:
        raise DataError(f"{source}: only a path column; {_LAYOUT_HINT}")
    body = rows[1:]
    if not body:
        raise DataError(f"{source}: a header but no tracks; add one row per track")
    for n, row in body:
        if len(row) != len(columns):
            raise DataError(f"{source} line {n}: {len(row)} field(s), the header has {len(columns)}; quote paths "
                            "or tags that contain the separator")
    folder = source.resolve().parent
    if TAGS_COLUMN in [lower[i] for i in others]:
        tcol = next(i for i in others if lower[i] == TAGS_COLUMN)
        unknown = [columns[i] for i in others if i != tcol]
        if unknown:
            raise DataError(f"{source}: unknown column(s) {', '.join(repr(c) for c in unknown)} beside 'path' "
                            f"and 'tags'; remove them ({_LAYOUT_HINT}, not both)")
        return _tag_lists(source, body, pcol, tcol, folder)
    return _one_column_per_tag(source, body, pcol, others, columns, folder)


def _check_path(source: Path, n: int, raw: str) -> str:
    text = raw.strip()
    if not text:
        raise DataError(f"{source} line {n}: empty path; give the audio file of every row")
    return text


def _tag_lists(source: Path, body: list[tuple[int, list[str]]], pcol: int, tcol: int, folder: Path) -> LabelSet:
    tags_of: dict[str, set[str]] = {}
    for n, row in body:
        track = _absolute(_check_path(source, n, row[pcol]), folder)
        cell = row[tcol]
        names = [t.strip() for t in cell.split(TAG_SEPARATOR)]
        if not cell.strip():
            raise DataError(f"{source} line {n}: empty tags for {row[pcol].strip()}; give at least one tag (a track "
                            "without any tag goes in the one-0/1-column-per-tag layout, as a row of zeros)")
        if any(not t for t in names):
            raise DataError(f"{source} line {n}: an empty tag in {cell.strip()!r}; separate tags with one ';' and "
                            "no ';' at the end")
        tags_of.setdefault(track, set()).update(names)
    tag_names = tuple(sorted({t for tags in tags_of.values() for t in tags}))
    index = {t: j for j, t in enumerate(tag_names)}
    matrix = np.zeros((len(tags_of), len(tag_names)), dtype=np.int8)
    for i, tags in enumerate(tags_of.values()):
        matrix[i, [index[t] for t in tags]] = 1
    return LabelSet(tuple(tags_of), tag_names, matrix, source)


def _one_column_per_tag(source: Path, body: list[tuple[int, list[str]]], pcol: int, tcols: list[int],
                        columns: list[str], folder: Path) -> LabelSet:
    names = [columns[i] for i in tcols]
    empty = [i + 1 for i in tcols if not columns[i]]
    if empty:
        raise DataError(f"{source}: column {empty[0]} has no name; name every tag column (or remove it)")
    dup = sorted({t for t in names if names.count(t) > 1})
    if dup:
        raise DataError(f"{source}: tag column(s) {', '.join(repr(t) for t in dup)} appear twice; merge them")
    rows_of: dict[str, tuple[int, tuple[int, ...]]] = {}
    for n, row in body:
        raw = _check_path(source, n, row[pcol])
        track = _absolute(raw, folder)
        values = []
        for i in tcols:
            cell = row[i].strip()
            if cell not in ("0", "1"):
                shown = repr(cell) if cell else "empty"
                raise DataError(f"{source} line {n}: column {columns[i]!r} is {shown}, not 0 or 1; every column "
                                f"besides 'path' is read as a 0/1 tag column (remove unknown columns, or use "
                                f"'path,tags' with ';'-separated tags)")
            values.append(int(cell))
        seen = rows_of.get(track)
        if seen is not None and seen[1] != tuple(values):
            differ = [names[j] for j, (a, b) in enumerate(zip(seen[1], values, strict=True)) if a != b]
            raise DataError(f"{source} lines {seen[0]} and {n}: {raw} is listed twice with different labels "
                            f"(tag(s) {', '.join(differ[:5])}); keep one row per track")
        rows_of.setdefault(track, (n, tuple(values)))
    matrix = np.array([v for _, v in rows_of.values()], dtype=np.int8).reshape(len(rows_of), len(names))
    return LabelSet(tuple(rows_of), tuple(names), matrix, source)


def check_paths_exist(labels: LabelSet, *, skip_missing: bool = False) -> tuple[LabelSet, list[str]]:
    """The labels of the tracks whose files exist, and the missing paths.

    Without ``skip_missing`` any missing file is a DataError listing the first :data:`SHOWN_MISSING` and
    counting the rest; with it, the missing tracks are dropped (and returned, to be reported).
    """
    exists = np.array([os.path.isfile(p) for p in labels.paths], dtype=bool)
    missing = [p for p, ok in zip(labels.paths, exists, strict=True) if not ok]
    if missing and not skip_missing:
        shown = ", ".join(missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        raise DataError(f"{labels.where()}: {len(missing)} of {len(labels.paths)} file(s) do not exist: "
                        f"{shown}{more}; fix the paths (relative ones are relative to the labels file) or pass "
                        "--skip-missing to train on the others")
    if missing and not exists.any():
        raise DataError(f"{labels.where()}: none of the {len(labels.paths)} files exists; check the paths "
                        "(relative ones are relative to the labels file)")
    return (labels.subset(exists) if missing else labels), missing


def check_positives(labels: LabelSet, folds: int | None = None) -> None:
    """Every tag needs a positive track, and with ``folds`` at least that many (one per cross-validation fold).

    A tag on every track is refused too: it has no negative to learn from.
    """
    counts = labels.matrix.sum(axis=0)
    n = labels.matrix.shape[0]
    none = [t for t, c in zip(labels.tag_names, counts, strict=True) if c == 0]
    if none:
        raise DataError(f"{labels.where()}: tag(s) {', '.join(repr(t) for t in none[:10])} have no positive track; "
                        "tag at least one track with each, or drop the tag")
    every = [t for t, c in zip(labels.tag_names, counts, strict=True) if c == n]
    if every:
        raise DataError(f"{labels.where()}: tag(s) {', '.join(repr(t) for t in every[:10])} are on every track, so "
                        "there is nothing to tell apart; add tracks without them, or drop the tag")
    if folds is not None:
        few = [(t, int(c)) for t, c in zip(labels.tag_names, counts, strict=True) if c < folds]
        if few:
            shown = ", ".join(f"{t!r} ({c})" for t, c in few[:10])
            least = min(c for _, c in few)
            lower = f", or lower --folds to {least}" if least >= 2 else ""
            raise DataError(f"{labels.where()}: tag(s) with fewer positive tracks than the {folds} folds: {shown}; "
                            f"tag more tracks with them, drop them{lower}")


def load_labels(path: str | os.PathLike[str], *, folds: int | None = None,
                skip_missing: bool = False) -> tuple[LabelSet, list[str]]:
    """:func:`read_labels`, then :func:`check_paths_exist`, then :func:`check_positives` on what is left.

    Returns the labels and the missing paths that ``skip_missing`` dropped.
    """
    labels = read_labels(path)
    labels, missing = check_paths_exist(labels, skip_missing=skip_missing)
    check_positives(labels, folds)
    return labels, missing
