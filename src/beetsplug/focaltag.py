"""beets plugin: mood/theme tags from focaltag models (``pip install 'focaltag[beets]'``, ``plugins: focaltag``).

``beet focaltag [QUERY]`` tags the matching items with the configured models. Every tag's probability is stored
as a flexible attribute ``focaltag_<tag>`` (a float, e.g. ``beet ls focaltag_happy:0.5..``), and the chosen tags
as the list field ``mood`` (``beet ls mood:happy``). ``mood`` is registered as a MediaFile field, so ``beet
write`` (or ``import.write``) puts it into the files exactly where ``focaltag tag --write-tags`` does: ID3v2.4
``TMOO`` (``TXXX:MOOD`` when beets writes ID3v2.3), Vorbis comment ``MOOD``, iTunes freeform ``MOOD``. Models
whose vocabulary is not mood/theme, and heads of ``focaltag head train`` (whatever their words), fill
``focaltag_tags`` (file key ``FOCALTAG_TAGS``) instead.

Configuration (``config.yaml``)::

    plugins: focaltag
    focaltag:
        models: [~/models/focal.pt]     # checkpoints, run/ensemble folders or catalogue names; averaged
                                        # (default: usc-sail-2020, the paper's ensemble, as `focaltag tag`)
        thresholds: ~/models/thr.tsv    # per-tag thresholds (decisions, strict >); default: a catalogue
                                        # model's own, as `focaltag tag`; none: no decisions, top_k is used
        top_k: 3
        chunks: 16                      # evenly spaced chunks per track
        auto: no                        # tag on import
        replace: yes                    # replace the item's mood (no: add ours to the existing values)
        force: no                       # re-tag items that already have focaltag_* attributes
        batch_size: null                # chunks per forward pass (null: focaltag's, 4 on CPU, 16 on GPU)
        device: cpu
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import mutagen.id3
from beets import config as beets_config
from beets import library, ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin
from mediafile import ListMediaField, ListStorageStyle, MP3StorageStyle, MP4ListStorageStyle

from focaltag.data.tags import MOODTHEME_TRAIN_COUNTS, short_tag
from focaltag.inference.options import Thresholds, thresholds_option
from focaltag.outputs.filetags import (
    MOOD_KEY,
    MP4_MEAN,
    OTHER_KEY,
    V23_SEPARATOR,
    default_tag_key,
    restore_vorbis_header_layout,
    result_tags,
    vorbis_header_layout,
)

PREFIX = "focaltag_"
MOOD_FIELD = "mood"
OTHER_FIELD = "focaltag_tags"


def attribute_name(tag: str) -> str:
    """Flexible attribute of a tag's probability: ``mood/theme---happy`` -> ``focaltag_happy``."""
    return PREFIX + re.sub(r"\W+", "_", short_tag(tag).strip().lower()).strip("_")


def _has_focaltag(item: Any) -> bool:
    """Whether an item already has probabilities (``focaltag_tags`` is read from every file, so it does not count)."""
    return any(k.startswith(PREFIX) and k != OTHER_FIELD and item.get(k) is not None
               for k in item.keys())  # noqa: SIM118 (a beets Model, not a dict)


class _MP3Style(ListStorageStyle, MP3StorageStyle):
    """ID3 as ``--write-tags``: TMOO (v2.4) or TXXX:MOOD (v2.3, values joined by "; "); TXXX for other keys."""

    formats = ["MP3"]

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__("TMOO" if field == MOOD_KEY else f"TXXX:{field}")

    def _v23(self) -> bool:
        return bool(beets_config["id3v23"].get(bool))

    def fetch(self, mutagen_file: Any) -> list[str]:
        tags = mutagen_file.tags
        if tags is None:
            return []
        if self.field == MOOD_KEY and "TMOO" in tags:
            return [str(v) for v in tags["TMOO"].text]
        frame = tags.get(f"TXXX:{self.field}")
        if frame is None:
            return []
        return [part for v in frame.text for part in str(v).split(V23_SEPARATOR)]

    def store(self, mutagen_file: Any, values: list[str]) -> None:
        if mutagen_file.tags is None:
            mutagen_file.add_tags()
        self.delete(mutagen_file)
        if not values:
            return
        enc = mutagen.id3.Encoding.UTF8
        if self.field == MOOD_KEY and not self._v23():
            mutagen_file.tags.add(mutagen.id3.TMOO(encoding=enc, text=list(values)))
        else:
            text = [V23_SEPARATOR.join(values)] if self._v23() else list(values)
            mutagen_file.tags.add(mutagen.id3.TXXX(encoding=enc, desc=self.field, text=text))

    def delete(self, mutagen_file: Any) -> None:
        if mutagen_file.tags is not None:
            mutagen_file.tags.delall(f"TXXX:{self.field}")
            if self.field == MOOD_KEY:
                mutagen_file.tags.delall("TMOO")


def media_field(key: str) -> ListMediaField:
    """The MediaFile field for ``MOOD`` / ``FOCALTAG_TAGS``, stored where ``--write-tags`` stores it."""
    return ListMediaField(_MP3Style(key), MP4ListStorageStyle(f"----:{MP4_MEAN}:{key}"), ListStorageStyle(key))


class FocaltagPlugin(BeetsPlugin):
    """``beet focaltag``: mood/theme tags and probabilities for library items."""

    item_types = {
        MOOD_FIELD: types.MULTI_VALUE_DSV,
        OTHER_FIELD: types.MULTI_VALUE_DSV,
        **{attribute_name(t): types.FLOAT for t in MOODTHEME_TRAIN_COUNTS},
    }

    def __init__(self) -> None:
        super().__init__()
        self.config.add({
            "models": [], "thresholds": None, "top_k": 3, "chunks": 16, "auto": False, "replace": True,
            "force": False, "batch_size": None, "device": "cpu",
        })
        for name, key in ((MOOD_FIELD, MOOD_KEY), (OTHER_FIELD, OTHER_KEY)):
            self.add_media_field(name, media_field(key))
            # `beet write` only compares the fields in this set when deciding whether a file is out of date
            library.Item._media_tag_fields.add(name)
        self._tagger: Any = None
        self._layouts: dict[bytes, tuple[int, int] | None] = {}
        self.register_listener("write", self.before_write)
        self.register_listener("after_write", self.after_write)
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # -- beets hooks ---------------------------------------------------------------------------------------
    def _batch_size(self) -> int | None:
        """``batch_size`` from the config: null for focaltag's default, else an integer (checked by confuse)."""
        return None if self.config["batch_size"].get() is None else self.config["batch_size"].get(int)

    def _thresholds(self) -> Thresholds:
        """``thresholds`` from the config, as ``focaltag tag --thresholds``: null -> "auto" (a catalogue model's own,
        else none), ``none`` (or false) -> no decisions, else the file."""
        value = self.config["thresholds"].get()
        if value is False:
            return None
        return thresholds_option(None if value is None else os.path.expanduser(str(value)))

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("focaltag", help="tag items with focaltag mood/theme models")
        cmd.parser.add_option("-f", "--force", action="store_true", default=None,
                              help="re-tag items that already have focaltag attributes")
        cmd.parser.add_option("-w", "--write", action="store_true", default=None, help="write tags to files")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write", help="don't write tags")
        cmd.func = self.command
        return [cmd]

    def command(self, lib: Any, opts: Any, args: list[str]) -> None:
        force = opts.force if opts.force is not None else self.config["force"].get(bool)
        n = self.tag_items(lib.items(args), write=ui.should_write(opts.write), force=force)
        self._log.info("tagged {} item(s)", n)

    def imported(self, session: Any, task: Any) -> None:
        self.tag_items(task.imported_items(), write=False, force=True)

    def before_write(self, item: Any, path: bytes, tags: Any) -> None:
        """Remember an Ogg Vorbis file's header page layout, which mutagen changes when the comment grows."""
        self._layouts[path] = vorbis_header_layout(os.fsdecode(path))

    def after_write(self, item: Any, path: bytes) -> None:
        """Restore that layout, so the file decodes sample-identically (as `focaltag tag --write-tags` does)."""
        restore_vorbis_header_layout(os.fsdecode(path), self._layouts.pop(path, None))

    # -- the work ------------------------------------------------------------------------------------------
    def tagger(self) -> Any:
        """The focaltag Tagger of the configured models (loaded once)."""
        if self._tagger is None:
            from focaltag import InferenceOptions, Tagger, configure_runtime
            from focaltag.errors import FocaltagError
            from focaltag.models.catalogue import DEFAULT_MODEL

            models = [os.path.expanduser(m) for m in self.config["models"].as_str_seq()] or [DEFAULT_MODEL]
            try:
                options = InferenceOptions(
                    n_chunks=self.config["chunks"].get(int), batch_size=self._batch_size(),
                    device=self.config["device"].as_str(), top_k=self.config["top_k"].get(int),
                    thresholds=self._thresholds())
                configure_runtime()
                self._tagger = Tagger(models, options)
            except FocaltagError as err:
                raise ui.UserError(f"focaltag: {err}") from None
        return self._tagger

    def tag_items(self, items: Iterable[Any], *, write: bool, force: bool) -> int:
        """Tag items (streaming, chunks of several tracks share forward passes); returns how many were tagged."""
        todo = [item for item in items if force or not _has_focaltag(item)]
        if not todo:
            return 0
        tagger = self.tagger()
        field = MOOD_FIELD if default_tag_key(tagger.tag_names, tagger.resolved.members) == MOOD_KEY else OTHER_FIELD
        paths = [os.fsdecode(item.path) for item in todo]
        done = 0
        for item, result in zip(todo, tagger.tag_many(paths), strict=True):
            if not result.ok:
                self._log.warning("cannot tag {}: {}", result.file, result.error)
                continue
            self.apply(item, result, tagger.tag_names, field)
            item.store()
            if write:
                item.try_write()
            done += 1
        return done

    def apply(self, item: Any, result: Any, tag_names: Sequence[str], field: str) -> None:
        """Set the probability attributes and the chosen tags of one item (the tagger's decisions, else top-k)."""
        for tag in tag_names:
            item[attribute_name(tag)] = round(float(result.probabilities[tag]), 4)
        chosen = result_tags(result, self.config["top_k"].get(int))
        if not self.config["replace"].get(bool):
            chosen = list(dict.fromkeys([*(item.get(field) or []), *chosen]))
        item[field] = chosen
