"""MTG-Jamendo metadata (split files and download manifests) fetched from the official repository at a pinned
commit and checked against git blob ids shipped in the package (``mtg_jamendo_pins.json``).

The files are laid out as the training configs read them: ``<root>/splits/split-N/autotagging_<tagset>-<part>.tsv``
and ``<root>/download/<dataset>_<type>_sha256_{tars,tracks}.txt`` (the repository's ``data/`` folder, without
``data/``). The pins are the blob ids ``git ls-tree`` prints for those paths at the pinned commit, so anyone can
check them; the files themselves are not shipped (CC BY-NC-SA 4.0, fetched on demand).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from focaltag.data.dataset import check_tagset, split_file_name
from focaltag.data.metadata import SUBSETS
from focaltag.errors import DataError, DownloadError

__all__ = [
    "LICENCE_NOTICE",
    "MIRROR_ENV",
    "N_SPLITS",
    "MetadataFile",
    "pins",
    "split_files_of",
    "manifest_files_of",
    "archive_dataset",
    "fetch_metadata",
    "copy_local_metadata",
    "mirror_from_env",
]

log = logging.getLogger(__name__)

PINS_FILE = Path(__file__).with_name("mtg_jamendo_pins.json")
MIRROR_ENV = "FOCALTAG_DATA_MIRROR"
N_SPLITS = 5
LICENCE_NOTICE = ("MTG-Jamendo metadata (split files, manifests) is licensed CC BY-NC-SA 4.0 by the Music Technology "
                  "Group, Universitat Pompeu Fabra (github.com/MTG/mtg-jamendo-dataset); every track has its own "
                  "Creative Commons licence (see the dataset's README). Non-commercial research use only.")


@dataclass(frozen=True)
class MetadataFile:
    """One pinned file: its path in the repository, where it goes under the dataset root, blob id and size."""

    path: str  # e.g. data/splits/split-0/autotagging_genre-train.tsv
    blob: str
    size: int

    @property
    def local(self) -> str:
        """Path under the dataset root: the repository path without its leading ``data/``."""
        return self.path.split("/", 1)[1] if self.path.startswith("data/") else self.path


@lru_cache(maxsize=1)
def pins() -> tuple[str, str, dict[str, MetadataFile]]:
    """(repository, commit, {repository path: MetadataFile}) from the package's pin file."""
    try:
        doc = json.loads(PINS_FILE.read_text(encoding="utf-8"))
        files = {p: MetadataFile(p, v["git_blob_sha1"], int(v["size"])) for p, v in doc["files"].items()}
        return doc["repo"], doc["commit"], files
    except (OSError, ValueError, KeyError, TypeError) as err:  # pragma: no cover - a broken installation
        raise DataError(f"the pin file {PINS_FILE} is missing or unreadable ({err}); reinstall focaltag") from None


def split_files_of(tagset: str, splits: range | list[int] = range(N_SPLITS)) -> list[MetadataFile]:
    """The pinned split files of a tag set: ``split-N/autotagging_<tagset>-{train,validation,test}.tsv``."""
    check_tagset(tagset)
    _, _, files = pins()
    return [files[f"data/splits/split-{n}/{split_file_name(tagset, part)}"] for n in splits for part in SUBSETS]


def archive_dataset(tagset: str) -> str:
    """The archive set holding a tag set's audio: mood/theme has its own, the others are in the full dataset."""
    return "autotagging_moodtheme" if check_tagset(tagset) == "moodtheme" else "raw_30s"


def manifest_files_of(dataset: str, data_type: str) -> list[MetadataFile]:
    """The pinned download manifests (tars, and tracks where the repository has one) of an archive set.

    An empty list means the package pins none for this combination (pass ``--manifest-dir``).
    """
    _, _, files = pins()
    names = [f"data/download/{dataset}_{data_type}_sha256_{kind}.txt" for kind in ("tars", "tracks")]
    return [files[n] for n in names if n in files]


def mirror_from_env(explicit: str | None) -> str | None:
    """``--metadata-mirror`` if given, else ``$FOCALTAG_DATA_MIRROR`` (empty means unset)."""
    return explicit or os.environ.get(MIRROR_ENV) or None


def _have(root: Path, f: MetadataFile) -> bool:
    from focaltag.data.pinned import Pin, blob_problem

    dest = root / f.local
    if not dest.is_file():
        return False
    repo, commit, _ = pins()
    return blob_problem(dest, Pin(repo, commit, f.path, f.blob, f.size)) is None


def missing_files(root: str | os.PathLike[str], wanted: list[MetadataFile]) -> list[MetadataFile]:
    """The files of ``wanted`` not yet present (and verified) under ``root``."""
    return [f for f in wanted if not _have(Path(root), f)]


def fetch_metadata(root: str | os.PathLike[str], wanted: list[MetadataFile], *, mirror: str | None = None,
                   retries: int = 3, backoff: float = 1.0, timeout: float = 60.0,
                   deadline: float | None = None) -> list[Path]:
    """Fetch every file of ``wanted`` into ``root`` (verified copies already there are kept); returns the paths.

    Each file is checked against its pinned blob id before it gets its final name; a mismatch raises
    DownloadError with one line and leaves nothing under that name.
    """
    from focaltag.data.pinned import Pin, fetch_pinned

    repo, commit, _ = pins()
    root = Path(root)
    hint = (f"check --metadata-mirror / ${MIRROR_ENV} ({mirror})" if mirror else
            f"pass --metadata-mirror URL or set {MIRROR_ENV} to a mirror laid out as <URL>/{repo}/<commit>/<path>")
    out = []
    for f in wanted:
        pin = Pin(repo, commit, f.path, f.blob, f.size)
        out.append(fetch_pinned(pin, root / f.local, base=mirror, retries=retries, backoff=backoff, timeout=timeout,
                                hint=hint, desc=f.local, deadline=deadline))
    return out


def copy_local_metadata(src: str | os.PathLike[str], root: str | os.PathLike[str], tagset: str) -> list[Path]:
    """Copy a tag set's split files from a local folder (a clone's ``data/`` or any folder holding
    ``splits/split-N/``) into ``root/splits``, unverified: for forks and fabricated test data."""
    src, root = Path(src), Path(root)
    base = src / "splits" if (src / "splits").is_dir() else src
    copied = []
    for n in range(N_SPLITS):
        names = [split_file_name(tagset, part) for part in SUBSETS]
        folder = base / f"split-{n}"
        if not all((folder / name).is_file() for name in names):
            if n == 0:
                raise DownloadError(f"--metadata-dir {src}: no splits/split-0/{names[0]} (and its validation / test "
                                    "files); point at a folder holding splits/split-N/, e.g. a clone's data/")
            continue
        for name in names:
            dest = root / "splits" / f"split-{n}" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{name}.tmp")
            shutil.copyfile(folder / name, tmp)
            os.replace(tmp, dest)
            copied.append(dest)
    log.warning("split files copied from %s without checking them against the pinned commit", src)
    return copied
