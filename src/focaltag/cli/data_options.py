"""The dataset options shared by ``data stats``, ``data prepare``, ``data audit`` (and others that take a dataset).

``--dataset-dir DIR`` is an MTG-Jamendo-layout folder (``splits/split-N/``, ``audio/``) or an own dataset (a
``tracks.csv``); ``--tagset``, ``--split`` and ``--part`` pick the file of the MTG layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from focaltag.data.tags import TAGSETS

__all__ = ["add_dataset_options", "open_dataset_from_args"]


def add_dataset_options(parser: argparse.ArgumentParser, *, part: bool = True, parts: bool = False) -> None:
    """Add ``--dataset-dir``, ``--tagset``, ``--split`` and (``part``) ``--part`` or (``parts``) repeatable
    ``--part``."""
    parser.add_argument("--dataset-dir", type=Path, default=None, metavar="DIR",
                        help="dataset root: the MTG-Jamendo layout (splits/split-N/, audio/; what `data download "
                        "--out DIR` writes) or an own dataset (DIR/tracks.csv with path,tags,split columns)")
    parser.add_argument("--tagset", default=None, choices=TAGSETS,
                        help="MTG-Jamendo tag set of --dataset-dir (default: moodtheme); ignored for a tracks.csv")
    parser.add_argument("--split", type=int, default=None, metavar="N",
                        help="official split 0-4 of --dataset-dir (default: 0); a tracks.csv has one split")
    if part:
        parser.add_argument("--part", default="train", choices=("train", "validation", "test"),
                            help="which part of the split")
    elif parts:
        parser.add_argument("--part", dest="parts", action="append", default=None,
                            choices=("train", "validation", "test"),
                            help="part(s) of the split (repeatable; default: all three)")


def open_dataset_from_args(args: argparse.Namespace) -> Any:
    """The :class:`focaltag.data.dataset.Dataset` of ``--dataset-dir`` (with ``--tagset`` / ``--split``)."""
    from focaltag.data.dataset import is_own_dataset, open_dataset
    from focaltag.errors import ConfigError

    if args.split is not None and is_own_dataset(args.dataset_dir):
        raise ConfigError(f"--split does not apply to {args.dataset_dir}: a tracks.csv dataset has one split "
                          "(its 'split' column); drop --split")
    return open_dataset(args.dataset_dir, tagset=args.tagset, split=args.split, where="--tagset")


def add_dataset_part_options(parser: argparse.ArgumentParser, group: Any = None, *, default_part: str = "test",
                             what: str = "tracks") -> None:
    """``--dataset-dir`` (in ``group`` when given, e.g. a mutually exclusive one) with ``--tagset``, ``--split``
    and ``--part`` (default ``default_part``) for commands that otherwise read a split file (predict, evaluate)."""
    (group or parser).add_argument(
        "--dataset-dir", type=Path, default=None, metavar="DIR",
        help=f"the {what} of --part of a dataset: the MTG-Jamendo layout (with --tagset, --split) or a folder "
        "with tracks.csv")
    parser.add_argument("--tagset", default=None, choices=TAGSETS,
                        help="with --dataset-dir: MTG-Jamendo tag set (default: moodtheme)")
    parser.add_argument("--split", type=int, default=None, metavar="N", help="with --dataset-dir: split (default: 0)")
    parser.add_argument("--part", default=default_part, choices=("train", "validation", "test"),
                        help="with --dataset-dir: which part")


def dataset_ground_truth(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """Multi-hot ground truth of ``--part`` of ``--dataset-dir``: rows in the part's order (as ``predict
    --dataset-dir`` writes them), columns in the dataset vocabulary's (sorted) order."""
    ds = open_dataset_from_args(args)
    vocab = ds.vocabulary()
    return vocab.encode(ds.tracks(args.part), unknown="ignore"), list(vocab.tags)
