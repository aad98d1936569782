"""Tag a whole music library into a JSON-lines file that survives kills, reruns, shards and edits.

``focaltag tag DIR... -o tags.jsonl`` is built on :func:`tag_library`:

* one JSON object per line, appended (and flushed) as soon as a track is done, in the ``--format json`` schema
  plus ``size`` and ``mtime`` (the file as it was when tagged), so a killed run loses at most the line it was
  writing;
* on start the output is read back: a partial last line (a kill mid-write) is cut off, every recorded path is
  skipped, and with ``refresh`` a path whose size or mtime changed is tagged again;
* files that fail, and folders that cannot be listed, go to ``<output>.failures.tsv`` (path, reason; the path
  escaped as :func:`focaltag._paths.escape_path` documents, read back by :func:`read_failures`); the next run
  tries those first (they are not in the output), then walks the rest;
* paths are kept as the OS gives them (``str`` with ``\\udcXX`` for bytes that are not UTF-8), so any name is
  tagged, written, recognised by resume and retried;
* ``shard=(I, N)`` keeps the files whose path relative to the folder argument hashes to ``I`` (sha1, the same
  rule as ``data prepare``), so N machines share a library; :func:`merge_outputs` joins their outputs;
* the folders are walked lazily (one directory listing at a time, sorted) and results are written as they come,
  so memory does not grow with the size of the library; only the set of recorded paths is kept.

When lines were replaced (``refresh``) or duplicates were found, the output is rewritten atomically (temporary
file, fsync, rename) with exactly one line per file: the last one.

With ``embeddings`` each track's embedding also goes to the vector store beside the output
(:mod:`focaltag.library.store`), written just before the track's line, under the same lock; the store resumes,
refreshes, repairs and merges with the JSONL, and a recorded track without a vector is tagged again for its
vector only (its line is kept).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from focaltag._io import atomic_write
from focaltag._locks import FileLock, lock_path, try_lock
from focaltag._paths import escape_path, json_line, unescape_path
from focaltag.audio.cache import shard_of
from focaltag.errors import ConfigError, DataError
from focaltag.library.files import AUDIO_EXTENSIONS
from focaltag.library.store import StoreHeader, StoreState, VectorStore, append_record, merge_stores

__all__ = [
    "LibraryFile",
    "LibrarySummary",
    "OutputState",
    "failures_path",
    "append_failures",
    "iter_library",
    "merge_outputs",
    "path_key",
    "read_failures",
    "read_file_list",
    "read_output",
    "tag_library",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryFile:
    """One audio file found under a folder argument: ``path`` as found, ``rel`` the shard key."""

    path: str
    rel: str


@dataclass
class LibrarySummary:
    """What a library run did: tracks ``done`` (tagged now), ``skipped`` (already recorded), ``failed``."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    refreshed: int = 0
    repaired: bool = False
    rewritten: bool = False
    extra: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.done} tagged, {self.skipped} skipped (already in the output), {self.failed} failed"
        if self.refreshed:
            text += f", {self.refreshed} re-tagged because they changed"
        for key, value in self.extra.items():
            text += f", {value} {key}"
        return text


def failures_path(output: str | os.PathLike[str]) -> Path:
    """``tags.jsonl`` -> ``tags.jsonl.failures.tsv``."""
    return Path(f"{os.fspath(output)}.failures.tsv")


def read_failures(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The ``(path, reason)`` rows of a ``failures.tsv`` (paths unescaped: exactly the paths that failed)."""
    rows: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            for line in f:
                if not line.endswith("\n") or not line.strip():
                    continue  # a row cut by a kill
                name, _, reason = line[:-1].partition("\t")
                rows.append((unescape_path(name), unescape_path(reason)))
    except FileNotFoundError:
        pass
    return rows


def append_failures(output: str | os.PathLike[str], rows: Iterable[tuple[str, str]]) -> None:
    """Add ``(path, reason)`` rows to the output's ``failures.tsv`` after a run (a tag write that failed on a file
    the run found already recorded); the next run retries them first, as any failure."""
    with open(failures_path(output), "a", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        f.writelines(_failure_row(path, reason) for path, reason in rows)


def _failure_row(path: str, reason: str) -> str:
    return f"{escape_path(path)}\t{escape_path(' '.join(reason.split()))}\n"


# -- the file walk ---------------------------------------------------------------------------------------------
Unlistable = Callable[[str, str], None]


def _cannot_list(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "cannot list the folder: permission denied; make it readable (chmod/chown) or skip it"
    return f"cannot list the folder: {err.strerror or err}"


def _walk(folder: str, unlistable: Unlistable | None = None) -> Iterator[str]:
    """Audio files below ``folder``, depth first, each directory sorted: one listing in memory at a time.

    A folder that cannot be listed is passed to ``unlistable`` (path, reason), or logged when there is none.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        if unlistable is None:
            logger.warning("%s: %s", folder, _cannot_list(err))
        else:
            unlistable(folder, _cannot_list(err))
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, unlistable)
            elif os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS and entry.is_file():
                yield entry.path
        except OSError:
            continue


def _retry_items(previous: list[tuple[str, str]], paths: Sequence[str | os.PathLike[str]],
                 shard: tuple[int, int] | None, unlistable: Unlistable) -> Iterator[LibraryFile]:
    """The files and folders of a previous ``failures.tsv`` that lie under this run's arguments (as written
    there, so the walk's strings match), as library files; folders are walked."""
    roots = [os.fspath(r) for r in paths]
    for path, _reason in previous:
        for root in roots:
            if path == root and not os.path.isdir(path):
                item = LibraryFile(path, Path(root).name)
            elif path.startswith(root.rstrip(os.sep) + os.sep) and os.path.lexists(path):
                if os.path.isdir(path):
                    for p in _walk(path, unlistable):
                        item = LibraryFile(p, Path(os.path.relpath(p, root)).as_posix())
                        if shard is None or shard_of(item.rel, shard[1]) == shard[0]:
                            yield item
                    break
                item = LibraryFile(path, Path(os.path.relpath(path, root)).as_posix())
            else:
                continue
            if shard is None or shard_of(item.rel, shard[1]) == shard[0]:
                yield item
            break


def _check_roots(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The arguments, de-duplicated; a folder inside another argument folder would be walked twice: refused."""
    roots: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"no such file or folder: {path}")
        if path not in roots:
            roots.append(path)
    folders = [(p, p.resolve()) for p in roots if p.is_dir()]
    for a, ra in folders:
        for b, rb in folders:
            if a != b and ra != rb and rb in ra.parents:
                raise ConfigError(f"{a} is inside {b}, which is also given; give each folder once")
            if a != b and ra == rb:
                raise ConfigError(f"{a} and {b} are the same folder; give it once")
    return roots


def read_file_list(list_file: str | os.PathLike[str]) -> Iterator[str]:
    """The paths of a ``--files-from`` list, lazily: one per line; blank lines and ``#`` comments are skipped.

    For catalogues whose file list comes from a database rather than a folder walk. A path is kept as written
    (surrounding whitespace removed); one that does not exist fails when it is decoded, like a broken file.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise ConfigError(f"--files-from {list_file}: no such file; give a text file with one path per line")
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            path = line.strip()
            if path and not path.startswith("#"):
                yield path


def iter_library(paths: Sequence[str | os.PathLike[str]], *, shard: tuple[int, int] | None = None,
                 unlistable: Unlistable | None = None,
                 files_from: str | os.PathLike[str] | None = None) -> Iterator[LibraryFile]:
    """Audio files of files and folders, lazily; ``shard=(I, N)`` keeps shard I by path relative to the folder.

    A file argument is kept whatever its extension (a bad one is reported when it is decoded); its shard key is
    its name. The order is deterministic (sorted within each folder), so reruns visit files in the same order.
    A folder that cannot be listed goes to ``unlistable(path, reason)`` (logged when None). ``files_from`` adds
    the paths of a list file (:func:`read_file_list`) after the arguments; their shard key is the path as listed.
    """
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard must be I/N with 0 <= I < N, got {shard[0]}/{shard[1]}")
    listed = read_file_list(files_from) if files_from is not None else iter(())
    for root in _check_roots(paths):
        if root.is_dir():
            base = os.fspath(root)
            found: Iterator[LibraryFile] = (LibraryFile(p, Path(os.path.relpath(p, base)).as_posix())
                                            for p in _walk(base, unlistable))
        else:
            found = iter([LibraryFile(os.fspath(root), root.name)])
        for item in found:
            if shard is None or shard_of(item.rel, shard[1]) == shard[0]:
                yield item
    for path in listed:
        if shard is None or shard_of(path, shard[1]) == shard[0]:
            yield LibraryFile(path, path)


# -- reading an output back ------------------------------------------------------------------------------------
def path_key(path: str) -> int:
    """64-bit key of a recorded path: 100,000 of them take a few MB (a collision is ~1e-9 likely)."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class OutputState:
    """The recorded files of an output, by :func:`path_key`: the line number of each file's last line, and
    (only when asked, for ``refresh``) its recorded (size, mtime)."""

    lines: dict[int, int] = field(default_factory=dict)
    stats: dict[int, tuple[int | None, float | None]] = field(default_factory=dict)
    n_lines: int = 0
    duplicates: int = 0
    repaired_bytes: int = 0


def _parse_line(line: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        raise DataError(f"{where} is not JSON; the output was edited or damaged: fix or delete that line, "
                        "then rerun") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("file"), str):
        raise DataError(f"{where} has no \"file\"; it is not a focaltag tag line: fix or delete it, then rerun")
    return obj


def read_output(path: str | os.PathLike[str], *, repair: bool = True, stats: bool = False) -> OutputState:
    """Read a JSONL output (streaming); with ``repair`` a partial last line left by a kill is cut off.

    ``stats`` also keeps each file's recorded size and mtime (what ``refresh`` compares).
    """
    state = OutputState()
    path = Path(path)
    if not path.exists():
        return state
    with open(path, "rb+" if repair else "rb") as f:
        good_end = 0
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):  # written by a run that was killed mid-line
                if repair:
                    state.repaired_bytes = len(line)
                    f.truncate(good_end)
                    logger.warning("%s: removed a partial last line (%d bytes) left by an interrupted run; "
                                   "that file is tagged again", path, len(line))
                break
            good_end += len(line)
            state.n_lines = number
            if not line.strip():
                continue
            obj = _parse_line(line, f"{path} line {number}")
            key = path_key(obj["file"])
            if key in state.lines:
                state.duplicates += 1
            state.lines[key] = number
            if stats:
                state.stats[key] = (obj.get("size"), obj.get("mtime"))
    return state


def _compact(path: Path, state: OutputState) -> None:
    """Rewrite ``path`` atomically keeping only each file's last line (streaming, flat memory).

    A file absent from ``state.lines`` was added once by this run and is kept.
    """
    with open(path, "rb") as src, atomic_write(path, "wb") as dst:
        for number, line in enumerate(src, start=1):
            if not line.strip() or not line.endswith(b"\n"):
                continue
            last = state.lines.get(path_key(json.loads(line)["file"]))
            if last is None or last == number:
                dst.write(line)


# -- the run ---------------------------------------------------------------------------------------------------
def _stat(path: str) -> tuple[int, float] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime


def _changed(record: tuple[int | None, float | None] | None, now: tuple[int, float] | None) -> bool:
    return record is None or now is None or record[0] != now[0] or record[1] != now[1]


def tag_library(tagger: Any, paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                refresh: bool = False, shard: tuple[int, int] | None = None, top_k: int | None = None,
                on_result: Callable[[Any], str | None] | None = None,
                on_recorded: Callable[[dict[str, Any]], bool] | None = None,
                progress: Callable[[int], None] | None = None,
                files_from: str | os.PathLike[str] | None = None, embeddings: bool = False) -> LibrarySummary:
    """Tag every not-yet-recorded audio file under ``paths`` with ``tagger``, appending to ``output``.

    Args:
        tagger: a :class:`~focaltag.inference.tagger.Tagger`, or anything whose ``tag_many(paths)`` yields one
            result per path in input order (:class:`focaltag.ray.RayTagger` runs the model on a Ray cluster).
        refresh: also re-tag recorded files whose size or mtime changed.
        shard: ``(I, N)``: only shard I of N (by path relative to the folder argument).
        top_k: length of each line's ``top`` (the tagger's ``top_k`` when None).
        on_result: called with each successful result before its line is written (``--write-tags``); the
            size and mtime are taken after it, so a tag write by focaltag does not look like a change. It
            returns the reason when it failed (the file then goes to the failures, and is retried), else None.
        on_recorded: called after the run with the recorded line of each file this run skipped (``--write-tags``
            on a library tagged before: the tags come from the recorded probabilities); returns True when it
            changed the file, whose size and mtime are then recorded again (the output is rewritten).
        progress: called with 1 per file tagged or failed.
        files_from: a list file of more paths (:func:`read_file_list`).
        embeddings: also keep each track's embedding (``result.embedding``) in the vector store
            ``<output>.vectors/``; the tagger must compute them (``InferenceOptions(embeddings=True)``).
    """
    output = Path(output)
    if output.exists() and output.is_dir():
        raise ConfigError(f"output {output} is a folder; give a file name such as {output / 'tags.jsonl'}")
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(output)
    try:
        with open(output, "a", encoding="utf-8") as out:
            return _tag_library(tagger, paths, output, out, refresh=refresh, shard=shard, top_k=top_k,
                                on_result=on_result, on_recorded=on_recorded, progress=progress,
                                files_from=files_from, vectors=_open_store(output, tagger, embeddings))
    finally:
        lock.release()


@dataclass
class _Vectors:
    """The vector store of a run with embeddings: its state on start, the header once known, the open file."""

    store: VectorStore
    state: StoreState
    header: StoreHeader | None
    file: IO[bytes] | None = None
    written: set[int] = field(default_factory=set)
    chunking: dict[str, Any] | None = None

    def append(self, path: str, result: Any) -> None:
        vector = getattr(result, "embedding", None)
        label = getattr(result, "embedding_model", None) or getattr(result, "model", "")
        if vector is None:
            raise ConfigError("--embeddings needs a tagger that computes embeddings "
                              "(InferenceOptions(embeddings=True)); this one returned none")
        if self.header is None:
            self.header = StoreHeader(str(label), int(len(vector)), self.chunking)
            self.store.create(self.header)
        elif label and label != self.header.embedding_model:
            raise ConfigError(f"{self.store.output}'s embeddings come from {self.header.embedding_model}, not "
                              f"{label}; tag with -m {self.header.embedding_model}, or write to another -o")
        if self.file is None:
            self.file = self.store.open_append()
        key = path_key(path)
        append_record(self.file, key, vector, self.header.dim)
        self.written.add(key)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _open_store(output: Path, tagger: Any, embeddings: bool) -> _Vectors | None:
    """The run's vector store (None without ``embeddings``); a store of another model is refused up front."""
    store = VectorStore(output)
    if not embeddings:
        if store.exists():
            logger.warning("%s has embeddings, but this run adds none: rerun with --embeddings to keep them "
                           "complete", output)
        return None
    header = None
    if store.exists():
        label = getattr(tagger, "model_name", None)
        header = store.check_model(label) if label else store.header()
    return _Vectors(store, store.read_state(repair=True), header, chunking=_chunking(tagger))


def _chunking(tagger: Any) -> dict[str, Any] | None:
    """How the run covers a track (kept in the store, so a seed from outside the library is tagged alike)."""
    options = getattr(tagger, "options", None)
    if options is None:
        return None
    return {"n_chunks": int(options.n_chunks), "adaptive": bool(options.adaptive),
            "hop_seconds": options.hop_seconds}


def _lock(output: Path) -> FileLock:
    """One run per output file at a time (``<output>.lock``): two appending runs would interleave and tag
    everything twice."""
    lock = try_lock(lock_path(output))
    if lock is None:
        raise ConfigError(f"another focaltag run is writing {output}; wait for it, or give this one another "
                          "-o (one per shard)")
    return lock


def _tag_library(tagger: Any, paths: Sequence[str | os.PathLike[str]], output: Path, out: IO[str], *,
                 refresh: bool, shard: tuple[int, int] | None, top_k: int | None,
                 on_result: Callable[[Any], str | None] | None, on_recorded: Callable[[dict[str, Any]], bool] | None,
                 progress: Callable[[int], None] | None,
                 files_from: str | os.PathLike[str] | None = None,
                 vectors: _Vectors | None = None) -> LibrarySummary:
    state = read_output(output, stats=refresh)
    skipped: set[int] = set()  # only filled for on_recorded
    summary = LibrarySummary(repaired=state.repaired_bytes > 0)
    fail_file = failures_path(output)
    previous = read_failures(fail_file)
    if previous:
        logger.info("retrying first the %d files and folders listed in %s", len(previous), fail_file)
    in_flight: deque[tuple[str, str]] = deque()  # (path, NEW | REFRESH | VECTOR)
    has_vector = vectors.state.last if vectors is not None else {}

    def todo(failures: IO[str]) -> Iterator[str]:
        def unlistable(folder: str, reason: str) -> None:
            if folder in reported:  # met again by the walk after the retry phase
                return
            reported.add(folder)
            summary.failed += 1
            logger.warning("%s: %s", folder, reason)
            failures.write(_failure_row(folder, reason))
            failures.flush()

        reported: set[str] = set()
        retried: set[int] = set()  # what the retry phase yielded; the walk skips it (a handful of paths)
        for first, item in itertools.chain(
                ((True, i) for i in _retry_items(previous, paths, shard, unlistable)),
                ((False, i) for i in iter_library(paths, shard=shard, unlistable=unlistable,
                                                           files_from=files_from))):
            key = path_key(item.path)
            if first:
                retried.add(key)
            elif key in retried:
                continue
            recorded = key in state.lines
            if recorded and not (refresh and _changed(state.stats.get(key), _stat(item.path))):
                if on_recorded is not None:
                    skipped.add(key)
                summary.skipped += 1  # its line is kept either way
                if vectors is None or key in has_vector:
                    continue
                in_flight.append((item.path, _VECTOR))  # tagged before without --embeddings: the vector only
                yield item.path
                continue
            in_flight.append((item.path, _REFRESH if recorded else _NEW))
            yield item.path

    try:
        with open(fail_file, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as failures:
            replaced = _run(tagger, todo(failures), in_flight, out, failures, state, summary, top_k, on_result,
                            progress, vectors)
    finally:
        if vectors is not None:
            vectors.close()
        if summary.failed == 0:
            fail_file.unlink(missing_ok=True)
    if skipped:
        summary.rewritten = _revisit(output, state, skipped, on_recorded) or bool(replaced or state.duplicates)
    elif replaced or state.duplicates:
        _compact(output, state)
        summary.rewritten = True
    if vectors is not None:
        _settle_store(vectors, state, summary, replaced)
    return summary


def _settle_store(vectors: _Vectors, state: OutputState, summary: LibrarySummary, replaced: int) -> None:
    """After a run: one record per track of the JSONL; records of tracks without a line (a kill between the two
    writes) and superseded records (``refresh``) are dropped, atomically."""
    jsonl_keys = set(state.lines) | vectors.written
    orphans = set(vectors.state.last) - jsonl_keys
    if replaced or orphans or vectors.state.duplicates or (vectors.written & set(vectors.state.last)):
        dropped = vectors.store.compact(jsonl_keys)
        if orphans:
            logger.warning("%s: dropped %d vector(s) of tracks that have no line in %s (a run stopped between "
                           "the two writes)", vectors.store.folder, len(orphans), vectors.store.output)
        if dropped:
            summary.extra["superseded vectors dropped"] = dropped


def _revisit(output: Path, state: OutputState, keys: set[int],
             on_recorded: Callable[[dict[str, Any]], bool] | None) -> bool:
    """Stream the output once: call ``on_recorded`` for the files in ``keys``, re-record the size and mtime of
    those it changed, drop superseded lines; rewrite atomically if anything changed. Returns whether it did."""
    assert on_recorded is not None
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    changed = bool(state.duplicates)
    try:
        with open(output, "rb") as src, open(tmp, "wb") as dst:
            for number, line in enumerate(src, start=1):
                if not line.strip() or not line.endswith(b"\n"):
                    continue
                obj = json.loads(line)
                key = path_key(obj["file"])
                last = state.lines.get(key)
                if last is not None and last != number:
                    changed = True
                    continue
                if key in keys and on_recorded(obj):
                    size_mtime = _stat(obj["file"])
                    obj["size"], obj["mtime"] = size_mtime if size_mtime else (None, None)
                    line = (json_line(obj) + "\n").encode("utf-8")
                    changed = True
                dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        if changed:
            os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return changed


_NEW, _REFRESH, _VECTOR = "new", "refresh", "vector"


def _run(tagger: Any, todo: Iterator[str], in_flight: deque[tuple[str, str]], out: IO[str], failures: IO[str],
         state: OutputState, summary: LibrarySummary, top_k: int | None,
         on_result: Callable[[Any], str | None] | None, progress: Callable[[int], None] | None,
         vectors: _Vectors | None = None) -> int:
    """The tagging loop: one output line or failure row per file as it finishes; returns lines replaced.

    With ``vectors`` the track's vector is appended before its line; a ``VECTOR`` entry (recorded without one)
    gets the vector only."""
    from focaltag.inference.tagger import TagFailure
    from focaltag.outputs.writers import result_to_dict

    replaced = 0
    for result in tagger.tag_many(todo):
        path, kind = in_flight.popleft()
        was_recorded = kind == _REFRESH
        problem = result.error if isinstance(result, TagFailure) else None
        if problem is None and kind == _VECTOR:
            assert vectors is not None
            vectors.append(path, result)
            summary.extra["embedded"] = summary.extra.get("embedded", 0) + 1
            if progress is not None:
                progress(1)
            continue
        if problem is None and on_result is not None:
            problem = on_result(result)  # a tag write that failed: not recorded, so the next run retries it
        if problem is not None:
            summary.failed += 1
            failures.write(_failure_row(path, str(problem)))
            failures.flush()
        else:
            if vectors is not None:
                vectors.append(path, result)
            line = result_to_dict(result, top_k=top_k)
            line.pop("embedding", None)  # the vector lives in the store, not in every line
            line["file"] = path
            size_mtime = _stat(path)
            line["size"], line["mtime"] = size_mtime if size_mtime else (None, None)
            _append(out, line)
            summary.done += 1
            if was_recorded:
                replaced += 1
                summary.refreshed += 1
            state.n_lines += 1
            if was_recorded:  # the old line goes at compaction; new files need no entry (one line each)
                state.lines[path_key(path)] = state.n_lines
        if progress is not None:
            progress(1)
    return replaced


def _append(out: IO[str], obj: dict[str, Any]) -> None:
    """One line in a single write, flushed: a kill leaves at most a partial last line, which is repaired."""
    out.write(json_line(obj) + "\n")
    out.flush()


# -- merging shards --------------------------------------------------------------------------------------------
def _result_digest(obj: dict[str, Any]) -> bytes:
    """What must agree when a file is tagged twice: everything but the recorded mtime."""
    core = {k: v for k, v in obj.items() if k != "mtime"}
    return hashlib.blake2b(json.dumps(core, sort_keys=True).encode("utf-8"), digest_size=16).digest()


def merge_outputs(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> tuple[int, int]:
    """Join JSONL outputs (shards) into ``output``: one line per file; returns (files, duplicate lines dropped).

    A file present in several inputs with different results is an error (DataError) and nothing is written.
    Within one input the last line of a file wins, as in a run. The write is atomic.
    """
    output = Path(output)
    files = [Path(p) for p in inputs]
    if not files:
        raise ConfigError("merge-tags needs at least one input file")
    for p in files:
        if not p.is_file():
            raise ConfigError(f"no such output file: {p}")
        if output.exists() and p.resolve() == output.resolve():
            raise ConfigError(f"{p} is both an input and the output; write the merge to a new file")
    seen: dict[int, tuple[bytes, str]] = {}
    dropped = 0
    states = [read_output(p, repair=False) for p in files]
    for p, state in zip(files, states, strict=True):
        with open(p, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n") or not line.strip():
                    continue
                obj = _parse_line(line, f"{p} line {number}")
                key = path_key(obj["file"])
                if state.lines[key] != number:
                    dropped += 1
                    continue
                digest = _result_digest(obj)
                previous = seen.get(key)
                if previous is not None and previous[0] != digest:
                    raise DataError(f"{obj['file']} was tagged twice with different results ({previous[1]} and "
                                    f"{p}); tag it again in one shard or drop one of the lines")
                if previous is not None:
                    dropped += 1
                seen.setdefault(key, (digest, str(p)))
    written: set[int] = set()
    with atomic_write(output, "wb") as dst:
        for p, state in zip(files, states, strict=True):
            with open(p, "rb") as f:
                for number, line in enumerate(f, start=1):
                    if not line.endswith(b"\n") or not line.strip():
                        continue
                    key = path_key(json.loads(line)["file"])
                    if state.lines[key] == number and key not in written:
                        written.add(key)
                        dst.write(line)
    n_vectors = merge_stores(output, files, seen)
    if n_vectors:
        logger.info("merged %d embedding(s) into %s", n_vectors, VectorStore(output).folder)
    return len(seen), dropped
