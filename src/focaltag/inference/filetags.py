"""Write a model's tags into audio files where players, DJ software and taggers read mood (``--write-tags``).

Where the values go (the keys Picard and beets use, so other software finds them):

==========================  ============================================  =============================
container                   mood/theme models                             other vocabularies
==========================  ============================================  =============================
MP3, ID3v2.4 (or no tag)    ``TMOO`` (one frame, several values)          ``TXXX:FOCALTAG_TAGS``
MP3 that stays ID3v2.3      ``TXXX:MOOD`` (TMOO does not exist in v2.3)   ``TXXX:FOCALTAG_TAGS``
FLAC, Ogg Vorbis, Opus      Vorbis comment ``MOOD`` (one per value)       ``FOCALTAG_TAGS``
MP4 / M4A                   ``----:com.apple.iTunes:MOOD``                ``----:com.apple.iTunes:FOCALTAG_TAGS``
==========================  ============================================  =============================

Probabilities (only when asked) go to ``FOCALTAG_PROBABILITIES`` (TXXX / Vorbis comment / iTunes freeform) as
one JSON object ``{tag: probability}``.

Only tags are touched (mutagen rewrites the tag blocks, never the audio frames), and the write is safe: the file
is copied beside itself, the copy is tagged, read back and checked (tag values and stream parameters), then
renamed over the original. A crash leaves the original intact. Existing values are kept (ours are added) unless
``replace``; read-only files and containers without a mood field are reported and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from focaltag.data.tags import MOODTHEME_PREFIX, MOODTHEME_TRAIN_COUNTS, short_tag
from focaltag.errors import ConfigError

__all__ = [
    "MOOD_KEY",
    "OTHER_KEY",
    "PROBABILITIES_KEY",
    "FileTagWriter",
    "WriteOutcome",
    "chosen_tags",
    "is_mood_vocabulary",
    "read_file_tags",
    "restore_vorbis_header_layout",
    "vorbis_header_layout",
    "write_file_tags",
]

logger = logging.getLogger(__name__)

MOOD_KEY = "MOOD"
OTHER_KEY = "FOCALTAG_TAGS"
PROBABILITIES_KEY = "FOCALTAG_PROBABILITIES"
MP4_MEAN = "com.apple.iTunes"
V23_SEPARATOR = "; "

Status = Literal["written", "unchanged", "would write", "skipped"]


@dataclass
class WriteOutcome:
    """What happened to one file: ``status``, the ``key``, the ``values`` now (or to be) there, the previous ones."""

    file: str
    status: Status
    key: str
    values: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    reason: str = ""

    def line(self) -> str:
        if self.status == "skipped":
            return f"not writing tags to {self.file}: {self.reason}"
        values = "; ".join(self.values) or "(none)"
        before = "; ".join(self.previous) or "(none)"
        return f"{self.status}: {self.file} {self.key} = {values} (before: {before})"


def is_mood_vocabulary(tag_names: Sequence[str]) -> bool:
    """True for the MTG-Jamendo mood/theme tags (full or short names); other models write ``FOCALTAG_TAGS``."""
    return bool(tag_names) and all(t.startswith(MOODTHEME_PREFIX) or t in MOODTHEME_TRAIN_COUNTS
                                   for t in tag_names)


def chosen_tags(probabilities: Mapping[str, float], tag_names: Sequence[str], *,
                thresholds: np.ndarray | None = None, top_k: int = 5) -> list[str]:
    """The tags a file gets: yes/no decisions (official strict ``>``) with thresholds, else the top-k.

    Names are short (``happy``, not ``mood/theme---happy``), in the model's tag order for decisions and best
    first for top-k.
    """
    probs = np.asarray([probabilities[t] for t in tag_names], dtype=np.float64)
    if thresholds is not None:
        from focaltag.evaluation.thresholds import decide

        yes = decide(probs[None, :], np.asarray(thresholds, dtype=np.float64))[0]
        return [short_tag(t) for t, d in zip(tag_names, yes, strict=True) if d]
    order = np.argsort(-probs, kind="stable")[:top_k]
    return [short_tag(tag_names[j]) for j in order]


# -- container adapters ----------------------------------------------------------------------------------------
def _open(path: str | os.PathLike[str]) -> Any:
    import mutagen

    try:
        return mutagen.File(path)
    except mutagen.MutagenError as err:
        raise _Skip(f"cannot read its tags ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") \
            from None


class _Skip(Exception):
    """Internal: the file is skipped with this reason."""


def _kind(audio: Any) -> str:
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    if isinstance(audio, MP3):
        return "id3"
    if isinstance(audio, (FLAC, OggVorbis, OggOpus)):
        return "vorbis"
    if isinstance(audio, MP4):
        return "mp4"
    name = type(audio).__name__ if audio is not None else "not a recognised audio container"
    raise _Skip(f"unsupported container ({name}); tags are written to MP3, FLAC, Ogg Vorbis, Opus and MP4")


def _id3_v23(audio: Any) -> bool:
    return audio.tags is not None and tuple(audio.tags.version[:2]) == (2, 3)


def _id3_frame_id(key: str, v23: bool) -> str:
    return "TMOO" if key == MOOD_KEY and not v23 else f"TXXX:{key}"


def _get(audio: Any, kind: str, key: str) -> list[str]:
    tags = audio.tags
    if tags is None:
        return []
    if kind == "id3":
        v23 = _id3_v23(audio)
        frame = tags.get(_id3_frame_id(key, v23))
        values = [str(v) for v in frame.text] if frame is not None else []
        # ID3v2.3 has one string per frame: several values were joined with "; " (as Picard does)
        return [part for v in values for part in v.split(V23_SEPARATOR)] if v23 else values
    if kind == "vorbis":
        return [str(v) for v in tags.get(key, [])]
    values = tags.get(f"----:{MP4_MEAN}:{key}", [])
    return [bytes(v).decode("utf-8", "replace") for v in values]


def _set(audio: Any, kind: str, key: str, values: list[str]) -> None:
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if kind == "id3":
        from mutagen.id3 import TMOO, TXXX, Encoding

        frame_id = _id3_frame_id(key, _id3_v23(audio))
        tags.delall(frame_id)
        if values:
            frame = TMOO(encoding=Encoding.UTF8, text=values) if frame_id == "TMOO" else \
                TXXX(encoding=Encoding.UTF8, desc=key, text=values)
            tags.add(frame)
    elif kind == "vorbis":
        if values:
            tags[key] = values
        elif key in tags:
            del tags[key]
    else:
        from mutagen.mp4 import AtomDataType, MP4FreeForm

        atom = f"----:{MP4_MEAN}:{key}"
        if values:
            tags[atom] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
        elif atom in tags:
            del tags[atom]


def _vorbis_header_run(f: Any, min_packets: int = 2) -> tuple[list[Any], int]:
    """The pages from the Vorbis comment header to the end of the page that holds the setup header.

    Returns the pages and how many packets they hold (more than 2 when audio packets share the setup page).
    """
    from mutagen.ogg import OggPage

    page = OggPage(f)
    while not page.packets or not page.packets[0].startswith(b"\x03vorbis"):
        page = OggPage(f)
    pages = [page]
    while len(OggPage.to_packets(pages, strict=False)) < min_packets or not pages[-1].complete:
        page = OggPage(f)
        if page.serial == pages[0].serial:
            pages.append(page)
    return pages, len(OggPage.to_packets(pages, strict=False))


def _keep_vorbis_page_layout(path: str, n_packets: int, position: int) -> None:
    """Put the audio packets that shared the setup header's page back on it, as in the original file.

    When the comment grows, mutagen re-paginates the headers and moves those audio packets to a page of their own.
    The packets are unchanged, but libsndfile (what focaltag and many players decode with) then trims the start
    differently and the decoded audio shifts by a block; keeping the original layout keeps it sample-identical.
    """
    from mutagen.ogg import OggPage

    with open(path, "r+b") as f:
        pages, count = _vorbis_header_run(f, n_packets)
        if len(pages) == 1 or count != n_packets:
            return
        packets = OggPage.to_packets(pages, strict=False)
        if sum(len(p) for p in packets) > 60_000:  # one Ogg page holds at most 255 x 255 bytes
            return
        merged = OggPage.from_packets(packets, pages[0].sequence, default_size=65_025, wiggle_room=0)
        if len(merged) != 1:
            return
        merged[0].position = position
        OggPage.replace(f, pages, merged)


def vorbis_header_layout(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(packets, granule position)`` of an Ogg Vorbis file whose setup-header page also holds audio packets.

    None for any other file (not Ogg Vorbis, or headers on pages of their own, which a tag write keeps as is).
    Give the result to :func:`restore_vorbis_header_layout` after a tag write (the beets plugin does so around
    ``beet write``).
    """
    from mutagen import MutagenError

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"OggS":
                return None
            f.seek(0)
            pages, n_packets = _vorbis_header_run(f)
    except (OSError, EOFError, MutagenError):  # not Vorbis, truncated: nothing to keep
        return None
    return (n_packets, pages[-1].position) if len(pages) == 1 and n_packets > 2 else None


def restore_vorbis_header_layout(path: str | os.PathLike[str], layout: tuple[int, int] | None) -> None:
    """Undo mutagen's re-pagination of the Vorbis headers recorded by :func:`vorbis_header_layout`."""
    if layout is not None:
        _keep_vorbis_page_layout(os.fspath(path), *layout)


def _save(audio: Any, kind: str) -> None:
    from mutagen.oggvorbis import OggVorbis

    if isinstance(audio, OggVorbis):
        layout = vorbis_header_layout(audio.filename)
        audio.save()
        restore_vorbis_header_layout(audio.filename, layout)
        return
    if kind == "id3":
        # keep the version the file has: a v2.3 file stays v2.3 (several values joined by "; ", as Picard)
        if _id3_v23(audio):
            audio.save(v2_version=3, v23_sep=V23_SEPARATOR)
        else:
            audio.save(v2_version=4)
    else:
        audio.save()


def _stream(audio: Any) -> tuple[Any, ...]:
    info = audio.info
    return tuple(getattr(info, k, None) for k in ("sample_rate", "channels", "length"))


def read_file_tags(path: str | os.PathLike[str], key: str = MOOD_KEY) -> list[str]:
    """The values of ``key`` (``MOOD``, ``FOCALTAG_TAGS``, ...) in a file, where :func:`write_file_tags` puts them."""
    try:
        audio = _open(path)
        return _get(audio, _kind(audio), key)
    except _Skip:
        return []


def _merged(previous: list[str], values: Sequence[str], replace: bool) -> list[str]:
    if replace:
        return list(dict.fromkeys(values))
    return list(dict.fromkeys([*previous, *values]))


def write_file_tags(path: str | os.PathLike[str], values: Sequence[str], *, key: str = MOOD_KEY,
                    probabilities: Mapping[str, float] | None = None, replace: bool = False,
                    keep_mtime: bool = False, dry_run: bool = False) -> WriteOutcome:
    """Put ``values`` under ``key`` in the file (safe copy-tag-verify-rename); never raises for a bad file.

    Args:
        values: tag names, one entry each.
        key: ``MOOD`` (mood/theme models) or ``FOCALTAG_TAGS`` (other vocabularies).
        probabilities: also store ``{tag: probability}`` as JSON under ``FOCALTAG_PROBABILITIES``.
        replace: drop the values already under ``key``; otherwise ours are added after them.
        keep_mtime: give the file back its access and modification times.
        dry_run: only say what would change.
    """
    name = os.fspath(path)
    try:
        audio = _open(name)
        kind = _kind(audio)
        previous = _get(audio, kind, key)
        new = _merged(previous, values, replace)
        prob_text = None if probabilities is None else json.dumps(
            {short_tag(t): round(float(p), 4) for t, p in probabilities.items()}, ensure_ascii=False)
        prob_same = prob_text is None or _get(audio, kind, PROBABILITIES_KEY) == [prob_text]
        if new == previous and prob_same:
            return WriteOutcome(name, "unchanged", key, new, previous)
        if dry_run:
            return WriteOutcome(name, "would write", key, new, previous)
        folder = os.path.dirname(os.path.abspath(name))
        if not _writable(name):
            raise _Skip("the file is read-only (make it writable to tag it)")
        if not os.access(folder, os.W_OK):
            raise _Skip(f"its folder {folder} is read-only (the safe write renames a tagged copy over it)")
        _safe_write(name, kind, key, new, prob_text, keep_mtime)
        return WriteOutcome(name, "written", key, new, previous)
    except _Skip as skip:
        return WriteOutcome(name, "skipped", key, reason=str(skip))
    except OSError as err:
        return WriteOutcome(name, "skipped", key, reason=f"{err.strerror or err}")
    except Exception as err:  # a tag block mutagen chokes on must not stop a run over a whole library
        logger.debug("tag write of %s failed", name, exc_info=True)
        first = str(err).splitlines()[0] if str(err) else ""
        return WriteOutcome(name, "skipped", key, reason=f"unexpected {type(err).__name__}: {first}; the file is "
                            "unchanged")


def _writable(name: str) -> bool:
    """Writable for us, and not marked read-only (no write bit): root could write it, but the user said no."""
    return os.access(name, os.W_OK) and bool(os.stat(name).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _safe_write(name: str, kind: str, key: str, values: list[str], prob_text: str | None,
                keep_mtime: bool) -> None:
    """Copy, tag the copy, re-read and check it, then rename it over the original."""
    import mutagen

    st = os.stat(name)
    tmp = os.path.join(os.path.dirname(os.path.abspath(name)), f".{os.path.basename(name)}.focaltag-{os.getpid()}")
    try:
        shutil.copy2(name, tmp)
        copy = mutagen.File(tmp)
        before = _stream(copy)
        _set(copy, kind, key, values)
        if prob_text is not None:
            _set(copy, kind, PROBABILITIES_KEY, [prob_text])
        _save(copy, kind)
        check = mutagen.File(tmp)
        if _get(check, kind, key) != values:
            raise _Skip(f"the tagged copy did not read back {key} = {values}; the original is unchanged")
        if _stream(check) != before:
            raise _Skip("the tagged copy's audio stream parameters changed; the original is unchanged")
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, name)
        if keep_mtime:
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns))
    except mutagen.MutagenError as err:
        raise _Skip(f"mutagen could not write it ({type(err).__name__}: {err}); the original is unchanged") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class FileTagWriter:
    """``--write-tags``: called with each :class:`~focaltag.inference.tagger.TagResult`, writes its chosen tags.

    The key is ``MOOD`` for mood/theme models and ``FOCALTAG_TAGS`` for other vocabularies; the values are the
    yes/no decisions when ``thresholds`` are given, else the ``top_k`` best tags.
    """

    def __init__(self, tag_names: Sequence[str], *, thresholds: np.ndarray | None = None, top_k: int = 5,
                 replace: bool = False, probabilities: bool = False, keep_mtime: bool = False,
                 dry_run: bool = False) -> None:
        if thresholds is None and top_k < 1:
            raise ConfigError("--write-tags needs --thresholds or --top-k of at least 1 to choose the tags")
        self.tag_names = tuple(tag_names)
        self.key = MOOD_KEY if is_mood_vocabulary(self.tag_names) else OTHER_KEY
        self.thresholds, self.top_k = thresholds, top_k
        self.replace, self.probabilities, self.keep_mtime, self.dry_run = replace, probabilities, keep_mtime, dry_run
        self.counts: dict[str, int] = {"written": 0, "unchanged": 0, "would write": 0, "skipped": 0}

    def __call__(self, result: Any) -> WriteOutcome:
        values = chosen_tags(result.probabilities, self.tag_names, thresholds=self.thresholds, top_k=self.top_k)
        outcome = write_file_tags(result.file, values, key=self.key,
                                  probabilities=result.probabilities if self.probabilities else None,
                                  replace=self.replace, keep_mtime=self.keep_mtime, dry_run=self.dry_run)
        self.counts[outcome.status] += 1
        if outcome.status == "skipped":
            logger.warning("%s", outcome.line())
        elif outcome.status == "would write":
            logger.info("%s", outcome.line())
        else:
            logger.debug("%s", outcome.line())
        return outcome

    def recorded(self, line: Mapping[str, Any]) -> bool:
        """``--write-tags`` for a file an earlier run tagged: the tags come from its recorded probabilities.

        Returns True when the file was changed (so its size and mtime are recorded again).
        """
        probabilities = line.get("tags")
        if not isinstance(probabilities, dict) or set(probabilities) != set(self.tag_names):
            self.counts["skipped"] += 1
            logger.warning("not writing tags to %s: its recorded probabilities are of another tag set; tag with "
                           "this model into a new -o file", line.get("file"))
            return False
        outcome = self(SimpleNamespace(file=line["file"], probabilities=probabilities))
        return outcome.status == "written"

    def summary(self) -> str:
        if self.dry_run:
            return (f"tags: {self.counts['would write']} file(s) would change, {self.counts['unchanged']} "
                    f"unchanged, {self.counts['skipped']} skipped (dry run: nothing written)")
        return (f"tags: written to {self.counts['written']} file(s), {self.counts['unchanged']} already had them, "
                f"{self.counts['skipped']} skipped")
