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

``--tag-field NAME`` puts them under another field instead (heads from ``focaltag head train`` default to
``FOCALTAG_TAGS``, never ``MOOD`` unless asked): ``GROUPING`` is ID3 ``TIT1`` / Vorbis ``GROUPING`` / MP4
``\xa9grp``, ``COMMENT`` is ID3 ``COMM`` (language ``eng``, no description) / Vorbis ``COMMENT`` / MP4 ``\xa9cmt``,
any other name ``TXXX:NAME`` / Vorbis ``NAME`` / iTunes freeform ``NAME``.

Probabilities (only when asked) go to ``FOCALTAG_PROBABILITIES`` (TXXX / Vorbis comment / iTunes freeform) as
one JSON object ``{tag: probability}``.

Only tags are touched (mutagen rewrites the tag blocks, never the audio frames), and the file stays the file the
user knows: it is written in place (same inode), so its owner, group, mode, hard links and symlinks are kept (a
symlink is followed and its target tagged), and ``keep_mtime`` gives back its times. The write is safe: first a
copy of the file is put aside (``.NAME.focaltag-backup-PID`` beside it, checked byte for byte), then the file is
tagged in place, read back and checked (tag values and stream parameters); on any error (a full disk, a tag
mutagen cannot write) the copy is written back, and only when all went well is the copy removed. A run killed
mid-write leaves that copy: :func:`recover_leftovers` (called by the CLI before ``--write-tags`` runs) writes it
back and removes it. Existing values are kept (ours are added) unless ``replace``; read-only files and
containers without a mood field are reported and skipped; a write that fails is a failure (exit code 1).
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from focaltag.data.tags import MOODTHEME_PREFIX, MOODTHEME_TRAIN_COUNTS, short_tag
from focaltag.errors import ConfigError, first_line

__all__ = [
    "MOOD_KEY",
    "NATIVE_FIELDS",
    "OTHER_KEY",
    "PROBABILITIES_KEY",
    "FileTagWriter",
    "WriteOutcome",
    "chosen_tags",
    "result_tags",
    "default_tag_key",
    "is_mood_vocabulary",
    "read_file_tags",
    "recover_leftovers",
    "restore_vorbis_header_layout",
    "tag_field",
    "vorbis_header_layout",
    "write_file_tags",
]

logger = logging.getLogger(__name__)

MOOD_KEY = "MOOD"
OTHER_KEY = "FOCALTAG_TAGS"
PROBABILITIES_KEY = "FOCALTAG_PROBABILITIES"
MP4_MEAN = "com.apple.iTunes"
V23_SEPARATOR = "; "

Status = Literal["written", "unchanged", "would write", "skipped", "failed"]
BACKUP_MARK = ".focaltag-backup-"
# what a write leaves beside FILE while it runs: ".FILE.focaltag-backup-PID" (the copy put aside), and
# ".FILE.focaltag-PID" (the tagged copy of focaltag <= 0.2.1, which renamed it over the file)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.focaltag-(?P<backup>backup-)?(?P<pid>[0-9]+)$", re.DOTALL)


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
        if self.status == "failed":
            return f"could not write tags to {self.file}: {self.reason}"
        values = "; ".join(self.values) or "(none)"
        before = "; ".join(self.previous) or "(none)"
        return f"{self.status}: {self.file} {self.key} = {values} (before: {before})"


def is_mood_vocabulary(tag_names: Sequence[str]) -> bool:
    """True for the MTG-Jamendo mood/theme tags (full or short names); other models write ``FOCALTAG_TAGS``."""
    return bool(tag_names) and all(t.startswith(MOODTHEME_PREFIX) or t in MOODTHEME_TRAIN_COUNTS
                                   for t in tag_names)


def default_tag_key(tag_names: Sequence[str], members: Sequence[Any] = ()) -> str:
    """The file key a tagger's tags go under when the user names none: ``MOOD`` for a published mood/theme model,
    ``FOCALTAG_TAGS`` for other vocabularies and for any head of ``focaltag head train`` among ``members`` (a
    user's own words never go into ``MOOD`` unless asked, even when they are mood words)."""
    from focaltag.models.head import is_head_source

    if any(is_head_source(m) for m in members):
        return OTHER_KEY
    return MOOD_KEY if is_mood_vocabulary(tag_names) else OTHER_KEY


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


def result_tags(result: Any, top_k: int = 5) -> list[str]:
    """The tags a file gets from a tagging result: its yes/no decisions (computed once, by the tagger) where it has
    them, else its top-k; short names as :func:`chosen_tags`."""
    if result.decisions is not None:
        return [short_tag(t) for t in result.tag_names if result.decisions[t]]
    return [short_tag(t) for t, _ in sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:top_k]]


# -- container adapters ----------------------------------------------------------------------------------------
def _open(path: str | os.PathLike[str]) -> Any:
    import mutagen

    try:
        return mutagen.File(path)
    except mutagen.MutagenError as err:
        raise _Skip(f"cannot read its tags ({type(err).__name__}: {first_line(err, default='')})") \
            from None


class _Skip(Exception):
    """Internal: the file is skipped with this reason."""


class _Failed(Exception):
    """Internal: the write was tried and failed (the file is as it was); a failure of the run."""


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


NATIVE_FIELDS: dict[str, tuple[str, str]] = {"GROUPING": ("TIT1", "\xa9grp"), "COMMENT": ("COMM::eng", "\xa9cmt")}
"""``--tag-field`` names that players show under their own name: ``(ID3 frame, MP4 atom)``; a Vorbis comment
uses the name itself. Any other name goes to ``TXXX:NAME`` / the Vorbis comment ``NAME`` / the iTunes freeform
``NAME``."""
_FIELD_NAME = re.compile(r"^[A-Z0-9_][A-Z0-9_ .-]*$")


def tag_field(name: str) -> str:
    """A ``--tag-field`` value as the key it is written under (upper case); ConfigError for a name a Vorbis
    comment or ID3 ``TXXX`` frame cannot carry."""
    key = str(name).strip().upper()
    if not _FIELD_NAME.match(key):
        raise ConfigError(f"--tag-field {name!r}: use letters, digits, '_', '-', '.' or spaces (e.g. GROUPING, "
                          f"COMMENT, {OTHER_KEY})")
    return key


def _id3_frame_id(key: str, v23: bool) -> str:
    if key in NATIVE_FIELDS:
        return NATIVE_FIELDS[key][0]
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
    if key in NATIVE_FIELDS:
        return [str(v) for v in tags.get(NATIVE_FIELDS[key][1], [])]
    values = tags.get(f"----:{MP4_MEAN}:{key}", [])
    return [bytes(v).decode("utf-8", "replace") for v in values]


def _set(audio: Any, kind: str, key: str, values: list[str]) -> None:
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if kind == "id3":
        from mutagen.id3 import COMM, TIT1, TMOO, TXXX, Encoding

        frame_id = _id3_frame_id(key, _id3_v23(audio))
        tags.delall(frame_id)
        if values:
            frame = TMOO(encoding=Encoding.UTF8, text=values) if frame_id == "TMOO" else \
                TIT1(encoding=Encoding.UTF8, text=values) if frame_id == "TIT1" else \
                COMM(encoding=Encoding.UTF8, lang="eng", desc="", text=values) if frame_id == "COMM::eng" else \
                TXXX(encoding=Encoding.UTF8, desc=key, text=values)
            tags.add(frame)
    elif kind == "vorbis":
        if values:
            tags[key] = values
        elif key in tags:
            del tags[key]
    else:
        from mutagen.mp4 import AtomDataType, MP4FreeForm

        atom = NATIVE_FIELDS[key][1] if key in NATIVE_FIELDS else f"----:{MP4_MEAN}:{key}"
        if values:
            tags[atom] = list(values) if key in NATIVE_FIELDS else \
                [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
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

    if isinstance(audio, OggVorbis) and audio.filename is not None:  # opened by path (always, here)
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
    """Put ``values`` under ``key`` in the file (in place, a checked copy kept aside); never raises for a bad file.

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
        real = os.path.realpath(name)  # a symlink: its target is tagged, the link stays a link
        folder = os.path.dirname(real)
        if not _writable(real):
            raise _Skip("the file is read-only (make it writable to tag it)")
        if not os.access(folder, os.W_OK):
            raise _Skip(f"its folder {folder} is read-only (the safe write keeps a copy of the file beside it)")
    except _Skip as skip:
        return WriteOutcome(name, "skipped", key, reason=str(skip))
    except OSError as err:
        return WriteOutcome(name, "skipped", key, reason=f"{err.strerror or err}")
    except Exception as err:  # a tag block mutagen chokes on must not stop a run over a whole library
        logger.debug("reading the tags of %s failed", name, exc_info=True)
        return WriteOutcome(name, "skipped", key, reason=f"unexpected {type(err).__name__}: "
                            f"{first_line(err, default='')}; the file is "
                            "unchanged")
    try:
        _safe_write(real, kind, key, new, prob_text, keep_mtime)
    except _Failed as err:
        return WriteOutcome(name, "failed", key, new, previous, reason=str(err))
    except OSError as err:
        return WriteOutcome(name, "failed", key, new, previous,
                            reason=f"{err.strerror or err}; the file is unchanged")
    except Exception as err:  # a tag block mutagen chokes on while saving: the file was given back
        logger.debug("tag write of %s failed", name, exc_info=True)
        return WriteOutcome(name, "failed", key, new, previous,
                            reason=f"unexpected {type(err).__name__}: {first_line(err, default='')}; the file is "
                            "unchanged")
    return WriteOutcome(name, "written", key, new, previous)


def _writable(name: str) -> bool:
    """Writable for us, and not marked read-only (no write bit): root could write it, but the user said no."""
    return os.access(name, os.W_OK) and bool(os.stat(name).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _safe_write(real: str, kind: str, key: str, values: list[str], prob_text: str | None,
                keep_mtime: bool) -> None:
    """Put a checked copy aside, tag the file in place, read it back; on any error write the copy back.

    In place (not a tagged copy renamed over the file) keeps the inode: owner, group, mode and hard links.
    """
    import mutagen

    st = os.stat(real)
    backup = _backup_path(real)
    _copy_aside(real, backup, st)
    try:
        audio = mutagen.File(real)
        before = _stream(audio)
        _set(audio, kind, key, values)
        if prob_text is not None:
            _set(audio, kind, PROBABILITIES_KEY, [prob_text])
        _save(audio, kind)
        check = mutagen.File(real)
        if _get(check, kind, key) != values:
            raise _Failed(f"the file did not read back {key} = {values}")
        if _stream(check) != before:
            raise _Failed("its audio stream parameters changed")
        _fsync(real)
    except BaseException as err:  # also Ctrl-C: the file is given back as it was before going on
        _write_back(backup, real)
        os.unlink(backup)
        if isinstance(err, _Failed):
            raise _Failed(f"{err}; the file is unchanged") from None
        if isinstance(err, mutagen.MutagenError):
            raise _Failed(f"mutagen could not write it ({type(err).__name__}: {err}); the file is unchanged") \
                from None
        raise
    os.unlink(backup)
    if keep_mtime:
        os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))


def _backup_path(real: str) -> str:
    return os.path.join(os.path.dirname(real), f".{os.path.basename(real)}{BACKUP_MARK}{os.getpid()}")


def _copy_aside(real: str, backup: str, st: os.stat_result) -> None:
    """Copy the file to ``backup`` (private, synced, with the file's times) and check it byte for byte."""
    try:
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(real, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
        if not filecmp.cmp(real, backup, shallow=False):
            raise _Failed("the copy put aside before writing did not match the file; the file is unchanged")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(backup)
        raise


def _write_back(backup: str, real: str) -> None:
    """Write the copy put aside back into the file, in place (same inode), with its times."""
    with open(backup, "rb") as src, open(real, "r+b") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.truncate()
        dst.flush()
        os.fsync(dst.fileno())
    st = os.stat(backup)
    os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _leftovers_in(folder: str, entries: Sequence[str], names: Sequence[str] | None = None
                  ) -> Iterator[tuple[str, str, bool]]:
    """``(leftover, original, is_backup)`` among a folder's ``entries`` (only for the files ``names`` if given)."""
    for entry in entries:
        match = _LEFTOVER.match(entry)
        if match is None or (names is not None and match["name"] not in names):
            continue
        if _pid_alive(int(match["pid"])):  # a run writing right now: not ours to touch
            continue
        yield os.path.join(folder, entry), os.path.join(folder, match["name"]), bool(match["backup"])


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _candidates(paths: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[str, str, bool]]:
    """Leftovers in every folder below the folder arguments, beside each file argument and each symlink's target."""
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            for folder, _dirs, files in os.walk(path):  # one listing per folder, as the library walk does
                yield from _leftovers_in(folder, files)
                for name in files:
                    full = os.path.join(folder, name)
                    if os.path.islink(full):
                        real = os.path.realpath(full)
                        yield from _leftovers_in(os.path.dirname(real), _listing(os.path.dirname(real)),
                                                 [os.path.basename(real)])
        elif os.path.lexists(path):
            real = os.path.realpath(path)
            yield from _leftovers_in(os.path.dirname(real), _listing(os.path.dirname(real)),
                                     [os.path.basename(real)])


def recover_leftovers(paths: Sequence[str | os.PathLike[str]], *, dry_run: bool = False) -> list[str]:
    """Undo what a killed ``--write-tags`` run left under ``paths``; returns one line per file handled.

    The copy a write put aside (``.NAME.focaltag-backup-PID`` of a process that is gone) is written back into
    the file (the write may have been cut off half-way; its tags are written again by this run) and removed; a
    tagged copy left by focaltag <= 0.2.1 (``.NAME.focaltag-PID``, the file itself being intact) is removed.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for leftover, original, is_backup in _candidates(paths):
        if leftover in seen:
            continue
        seen.add(leftover)
        verb = "would restore" if dry_run else "restored"
        if not is_backup:
            line = f"{'would remove' if dry_run else 'removed'} {leftover}, a copy left by a killed run " \
                   f"(the file {original} is intact)"
            if not dry_run:
                os.unlink(leftover)
        elif os.path.exists(original):
            line = f"{verb} {original} from the copy a killed run put aside ({leftover})"
            if not dry_run:
                _write_back(leftover, original)
                os.unlink(leftover)
        else:
            line = f"{verb} {original} from the copy a killed run put aside (the file was gone)"
            if not dry_run:
                os.rename(leftover, original)
        lines.append(line)
    return lines


class FileTagWriter:
    """``--write-tags``: called with each :class:`~focaltag.inference.tagger.TagResult`, writes its chosen tags.

    The key is ``key`` (``--tag-field``: ``GROUPING``, ``COMMENT`` or any name, see :data:`NATIVE_FIELDS`) when
    given, else ``MOOD`` for mood/theme models and ``FOCALTAG_TAGS`` for other vocabularies; the values are the
    yes/no decisions when ``thresholds`` are given, else the ``top_k`` best tags.
    """

    def __init__(self, tag_names: Sequence[str], *, thresholds: np.ndarray | None = None, top_k: int = 5,
                 replace: bool = False, probabilities: bool = False, keep_mtime: bool = False,
                 dry_run: bool = False, key: str | None = None) -> None:
        if thresholds is None and top_k < 1:
            raise ConfigError("--write-tags needs --thresholds or --top-k of at least 1 to choose the tags")
        self.tag_names = tuple(tag_names)
        self.key = tag_field(key) if key is not None else default_tag_key(self.tag_names)
        self.thresholds, self.top_k = thresholds, top_k
        self.replace, self.probabilities, self.keep_mtime, self.dry_run = replace, probabilities, keep_mtime, dry_run
        self.counts: dict[str, int] = {"written": 0, "unchanged": 0, "would write": 0, "skipped": 0, "failed": 0}
        self.recorded_failures: list[tuple[str, str]] = []  # (file, reason) of failed writes in recorded()

    def __call__(self, result: Any) -> WriteOutcome:
        """Write the tags of a tagging result: its decisions as the tagger made them, else its top-k."""
        return self._write(result.file, result_tags(result, self.top_k), result.probabilities)

    def _write(self, file: str, values: list[str], probabilities: Mapping[str, float]) -> WriteOutcome:
        outcome = write_file_tags(file, values, key=self.key,
                                  probabilities=probabilities if self.probabilities else None,
                                  replace=self.replace, keep_mtime=self.keep_mtime, dry_run=self.dry_run)
        self.counts[outcome.status] += 1
        if outcome.status in ("skipped", "failed"):
            logger.warning("%s", outcome.line())
        elif outcome.status == "would write":
            logger.info("%s", outcome.line())
        else:
            logger.debug("%s", outcome.line())
        return outcome

    def failure_of(self, result: Any) -> str | None:
        """Write the tags of ``result``; the reason when the write failed (a library run lists it in
        failures.tsv and retries it), else None."""
        outcome = self(result)
        return outcome.reason if outcome.status == "failed" else None

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
        values = chosen_tags(probabilities, self.tag_names, thresholds=self.thresholds, top_k=self.top_k)
        outcome = self._write(line["file"], values, probabilities)
        if outcome.status == "failed":
            self.recorded_failures.append((outcome.file, outcome.reason))
        return outcome.status == "written"

    def summary(self) -> str:
        if self.dry_run:
            return (f"tags: {self.counts['would write']} file(s) would change, {self.counts['unchanged']} "
                    f"unchanged, {self.counts['skipped']} skipped (dry run: nothing written)")
        failed = f", {self.counts['failed']} failed" if self.counts["failed"] else ""
        return (f"tags: written to {self.counts['written']} file(s), {self.counts['unchanged']} already had them, "
                f"{self.counts['skipped']} skipped{failed}")
