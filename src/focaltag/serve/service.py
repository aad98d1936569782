"""The work behind ``POST /api/v1/tag``: admission (queue limit), a bounded worker pool, results as JSON.

Results go through :func:`focaltag.outputs.writers.result_to_dict`, so the API's objects are exactly the
objects of ``focaltag tag --format json``; only ``file`` is the uploaded name (never a server path) and
``model`` the public name of the model that answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from focaltag.errors import ConfigError
from focaltag.serve.config import ServeConfig
from focaltag.serve.registry import ModelRegistry
from focaltag.serve.uploads import UploadedFile

__all__ = ["TagService", "TagOptions", "Busy", "TimedOut", "parse_options", "FORM_FIELDS"]

FORM_FIELDS = ("file", "model", "top_k", "chunks", "taggram")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class Busy(Exception):
    """The queue is full (HTTP 503): the client should retry later."""


class TimedOut(Exception):
    """The request passed its deadline while waiting or tagging (HTTP 504); its worker stops after the current
    file."""


@dataclass(frozen=True)
class TagOptions:
    """A request's form fields, validated: model name (resolved), top-k, chunks (None: the model's), taggram."""

    model: str
    top_k: int = 5
    chunks: int | None = None
    taggram: bool = False


def _int_field(fields: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    text = fields.get(name, "")
    if text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"form field {name!r} must be an integer, got {text!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"form field {name!r} must be {lo}..{hi}, got {value}")
    return value


def parse_options(fields: Mapping[str, str], registry: ModelRegistry) -> TagOptions:
    """Validate the form fields of a tag request (ConfigError: HTTP 400)."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        raise ConfigError(f"unknown form field {unknown[0]!r}; the fields are {', '.join(FORM_FIELDS)}")
    model = registry.resolve(fields.get("model") or None)
    n_tags = len(registry.tagger(model).tag_names)
    top_k = _int_field(fields, "top_k", 0, n_tags)
    chunks = _int_field(fields, "chunks", 1, 256)
    taggram = fields.get("taggram", "").lower()
    if taggram not in _TRUE | _FALSE:
        raise ConfigError(f"form field 'taggram' must be true or false, got {taggram!r}")
    return TagOptions(model, 5 if top_k is None else top_k, chunks, taggram in _TRUE)


class TagService:
    """Runs tag requests on ``config.workers`` threads and admits at most ``config.queue`` requests at once."""

    def __init__(self, registry: ModelRegistry, config: ServeConfig) -> None:
        self.registry, self.config = registry, config
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="focaltag-serve")
        self._lock = threading.Lock()
        self._plot_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe
        self.admitted = 0
        self.served = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a queue slot for one request, or raise Busy at once when all ``queue`` slots are taken."""
        with self._lock:
            if self.admitted >= self.config.queue:
                raise Busy(f"the server is busy ({self.config.queue} requests queued); retry shortly")
            self.admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1
                self.served += 1

    async def run(self, files: Sequence[UploadedFile], options: TagOptions, *,
                  timeout: float | None = None) -> list[dict[str, Any]]:
        """Tag ``files`` on the worker pool; one JSON object per file, in order.

        Raises TimedOut after ``timeout`` seconds (waiting for a worker included): a request still waiting is
        dropped, a running one stops before its next file, so the worker is free for the others.
        """
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        work = loop.run_in_executor(self._executor, self.tag_files, list(files), options, stop)
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise TimedOut(f"the request took longer than the server's --request-timeout ({timeout:g} s left "
                           "after the upload); send fewer or shorter files, fewer chunks or no taggram") from None
        finally:
            stop.set()  # also when the client went away: nobody waits for the rest

    def tag_files(self, files: Sequence[UploadedFile], options: TagOptions,
                  stop: threading.Event | None = None) -> list[dict[str, Any]]:
        """Tag on the calling thread (a worker): the same results, serialised as ``focaltag tag`` does.

        ``stop``, once set, ends the work before the next file (the request was answered with a timeout).
        """
        from focaltag.inference.tagger import TagFailure
        from focaltag.outputs.writers import result_to_dict

        tagger = self.registry.tagger(options.model, options.chunks)
        out: list[dict[str, Any]] = []
        with contextlib.closing(tagger.tag_many([f.path for f in files])) as results:
            for upload in files:
                if stop is not None and stop.is_set():  # before the next file is decoded and tagged
                    break
                result = next(results)
                if isinstance(result, TagFailure):
                    out.append({"file": upload.name, "error": _public_error(result.error, upload)})
                    continue
                result = dataclasses.replace(result, file=upload.name)
                obj = result_to_dict(result, top_k=options.top_k)
                obj["model"] = options.model
                if options.taggram and not (stop is not None and stop.is_set()):
                    obj["taggram_png"] = self._taggram(result, upload)
                out.append(obj)
        return out

    def _taggram(self, result: Any, upload: UploadedFile) -> str:
        """The taggram PNG (``focaltag tag --taggram``'s plot) as base64."""
        from focaltag.outputs.taggram import plot_taggram

        png = upload.path.with_name(upload.path.name + ".taggram.png")
        with self._plot_lock:
            plot_taggram(result, png)
        data = png.read_bytes()
        png.unlink(missing_ok=True)
        return base64.b64encode(data).decode("ascii")

    def close(self) -> None:
        """Finish running work, drop queued work (the server is stopping)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _public_error(message: str, upload: UploadedFile) -> str:
    """The error with the private folder's paths replaced by the uploaded name."""
    for private in (str(upload.path.resolve()), str(upload.path), str(upload.path.parent)):
        message = message.replace(private, upload.name)
    return message
