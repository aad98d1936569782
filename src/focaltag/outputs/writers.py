"""Output formats of ``focaltag tag``: a writer per format, chosen by name with :func:`get_writer`.

File names are written losslessly whatever bytes they hold (:mod:`focaltag._paths`): JSON as JSON strings
(``\\udcXX`` for a byte that is not UTF-8), the table and CSV escaped by ``escape_path`` (``\\t``, ``\\n``,
``\\xHH``, ...), so one file is one line and the name reads back exactly.

Every writer streams: ``write(result)`` as each file finishes, ``close()`` at the end, so a long run shows
results as it goes and an interrupted run keeps what it printed.

* ``table``: one line per file with its top-k tags (short names) and probabilities; for humans.
* ``json``: a JSON array, one object per file: ``file``, ``model`` (the catalogue name or the checkpoint's file
  name), ``duration`` (seconds), ``precision`` (the network's:
  ``bf16``, ``int8`` or ``fp32``), ``chunks`` (chunks averaged; adaptive chunking may use fewer than the fixed
  16), ``tags`` ({tag: probability}
  for every tag, full names), ``top`` ([{"tag", "probability"}] best first) and ``decisions`` ({tag: bool}) when
  thresholds were given; a failed file is ``{"file", "error"}``.
* ``csv``: a header ``file,duration,error,<tag>...`` (+ ``predicted`` with ``;``-joined tags when thresholds
  were given) and one row per file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from typing import IO, Any

from focaltag._paths import escape_path, json_line
from focaltag.data.tags import short_tag
from focaltag.errors import ConfigError
from focaltag.inference.tagger import TagFailure, TagResult

__all__ = ["ResultWriter", "TableWriter", "JsonWriter", "CsvWriter", "WRITERS", "get_writer", "result_to_dict"]

JSON_KEYS = ("file", "model", "duration", "precision", "runtime", "chunks", "tags", "top", "decisions")
"""Keys of a JSON result object (``decisions`` only when thresholds were given; ``embedding`` and
``embedding_model`` only with embeddings)."""


def result_to_dict(result: TagResult | TagFailure, *, top_k: int | None = None,
                   embedding: bool = True) -> dict[str, Any]:
    """The JSON object of one result (``{file, error}`` for a failure); ``embedding`` and ``embedding_model`` when
    the result has an embedding and ``embedding`` is true."""
    if isinstance(result, TagFailure):
        return {"file": result.file, "error": result.error}
    top = result.top if top_k is None else sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
    out: dict[str, Any] = {
        "file": result.file,
        "model": result.model,
        "duration": round(result.duration, 3),
        "precision": result.precision,
        "runtime": result.runtime,
        "chunks": result.chunks_used,
        "tags": {t: round(p, 6) for t, p in result.probabilities.items()},
        "top": [{"tag": t, "probability": round(p, 6)} for t, p in top],
    }
    if result.decisions is not None:
        out["decisions"] = dict(result.decisions)
    if embedding and result.embedding is not None:
        out["embedding"] = [round(float(v), 6) for v in result.embedding]
        out["embedding_model"] = result.embedding_model
    return out


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class ResultWriter:
    """Base class: ``write`` each result, then ``close``; ``n_failed`` counts failures written."""

    def __init__(self, stream: IO[str], *, tag_names: Sequence[str], top_k: int = 5,
                 decisions: bool = False) -> None:
        self.stream, self.tag_names, self.top_k, self.decisions = stream, tuple(tag_names), top_k, decisions
        self.n_written = self.n_failed = 0

    def write(self, result: TagResult | TagFailure) -> None:
        self.n_written += 1
        self.n_failed += isinstance(result, TagFailure)
        self._write(result)
        self.stream.flush()

    def _write(self, result: TagResult | TagFailure) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TableWriter(ResultWriter):
    """``FILE  DURATION  tag prob, tag prob, ...``; tags above their threshold are marked ``*``."""

    def _write(self, result: TagResult | TagFailure) -> None:
        if isinstance(result, TagFailure):
            self.stream.write(f"{escape_path(result.file)}\t-\tERROR: {escape_path(' '.join(result.error.split()))}\n")
            return
        top = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[: self.top_k]
        decided = result.decisions or {}
        parts = [f"{short_tag(t)}{'*' if decided.get(t) else ''} {p:.3f}" for t, p in top]
        line = f"{escape_path(result.file)}\t{_duration(result.duration)}\t{', '.join(parts)}"
        if result.decisions is not None:
            on = [short_tag(t) for t, v in result.decisions.items() if v]
            line += f"\t[predicted: {', '.join(on) if on else 'none'}]"
        self.stream.write(line + "\n")


class JsonWriter(ResultWriter):
    """A JSON array streamed one object at a time (valid JSON once closed)."""

    def __init__(self, stream: IO[str], **kwargs: Any) -> None:
        super().__init__(stream, **kwargs)
        self._opened = False
        self._closed = False

    def _write(self, result: TagResult | TagFailure) -> None:
        self.stream.write(",\n" if self._opened else "[\n")
        self._opened = True
        self.stream.write(json_line(result_to_dict(result, top_k=self.top_k)))

    def close(self) -> None:
        if not self._closed:
            self.stream.write("\n]\n" if self._opened else "[]\n")
            self._closed = True
        super().close()


class CsvWriter(ResultWriter):
    """``file,duration,error,<every tag>[,predicted]`` with probabilities to 6 decimals."""

    def __init__(self, stream: IO[str], **kwargs: Any) -> None:
        super().__init__(stream, **kwargs)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(["file", "duration", "error", *self.tag_names, *(["predicted"] if self.decisions else [])])

    def _write(self, result: TagResult | TagFailure) -> None:
        extra = [""] if self.decisions else []
        if isinstance(result, TagFailure):
            self._csv.writerow([escape_path(result.file), "", escape_path(result.error), *([""] * len(self.tag_names)), *extra])
            return
        row = [escape_path(result.file), f"{result.duration:.3f}", "", *(f"{result.probabilities[t]:.6f}" for t in self.tag_names)]
        if self.decisions:
            row.append(";".join(t for t, v in (result.decisions or {}).items() if v))
        self._csv.writerow(row)


WRITERS: dict[str, type[ResultWriter]] = {"table": TableWriter, "json": JsonWriter, "csv": CsvWriter}


def get_writer(fmt: str, stream: IO[str], *, tag_names: Sequence[str], top_k: int = 5,
               decisions: bool = False) -> ResultWriter:
    """The writer for ``fmt`` (``table``, ``json`` or ``csv``) writing to ``stream``."""
    cls = WRITERS.get(fmt)
    if cls is None:
        raise ConfigError(f"unknown output format {fmt!r}; choose one of {', '.join(WRITERS)}")
    return cls(stream, tag_names=tag_names, top_k=top_k, decisions=decisions)
