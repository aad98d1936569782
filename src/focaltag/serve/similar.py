"""``POST /api/v1/similar`` of ``focaltag serve --library tags.jsonl``: the library's tracks nearest to a seed.

The seed is either an uploaded audio file (multipart, one ``file`` field, tagged with the library's model) or a
track of the library named by its path exactly as in the JSONL (a JSON body ``{"path": ...}``). Only library
paths are ever answered: a named path is looked up in the library, never on the server's disk, and an upload is
reported under the name the client gave it.

Options: ``n`` (1..100, default 10) and ``where`` (tags, comma-separated or a JSON list); the answer is
``{"seed": NAME, "results": [{"file", "score"}, ...]}`` best first, the score being the cosine similarity.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import (  # at module level: FastAPI reads the route's annotations from these globals
    Request,
    Response,
)

from focaltag.errors import ConfigError, DataError

__all__ = ["SimilarService", "SimilarQuery", "parse_query", "MAX_RESULTS"]

MAX_RESULTS = 100
_FIELDS = ("file", "path", "n", "where")


@dataclass(frozen=True)
class SimilarQuery:
    """A validated request: a library path (or None for an upload), how many results, and the tag filter."""

    path: str | None
    n: int = 10
    where: tuple[str, ...] = ()


def parse_query(fields: Mapping[str, Any]) -> SimilarQuery:
    """Validate a request's fields (form fields or a JSON object); ConfigError is HTTP 400."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}; the fields are {', '.join(_FIELDS)}")
    raw_n = fields.get("n", 10)
    try:
        n = int(raw_n if raw_n != "" else 10)
    except (TypeError, ValueError):
        raise ConfigError(f"field 'n' must be an integer, got {raw_n!r}") from None
    if not 1 <= n <= MAX_RESULTS:
        raise ConfigError(f"field 'n' must be 1..{MAX_RESULTS}, got {n}")
    where = fields.get("where", ())
    if isinstance(where, str):
        where = [t for t in where.split(",") if t.strip()]
    if not isinstance(where, (list, tuple)) or not all(isinstance(t, str) for t in where):
        raise ConfigError("field 'where' must be tags, comma-separated or a list of strings")
    path = fields.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError("field 'path' must be a string: a track's path as the library lists it")
    return SimilarQuery(path or None, n, tuple(t.strip() for t in where))


class SimilarService:
    """The library a server answers similarity queries from; its index and model are loaded at start."""

    def __init__(self, library_path: str | Path, *, device: str = "cpu") -> None:
        from focaltag.library.api import Library

        self.library = Library(library_path, device=device)
        if self.library.embedding_model is None:
            raise DataError(f"serve --library {library_path}: the library has no embeddings; rerun 'focaltag tag "
                            f"... -o {library_path} --embeddings'")
        self._lock = threading.Lock()  # one tagger, one forward pass at a time

    @property
    def size(self) -> int:
        return len(self.library.index.files)

    def warm(self) -> None:
        """Load the library's model now, so the first upload is not the one that pays for it."""
        _ = self.library.tagger

    def by_path(self, query: SimilarQuery) -> dict[str, Any]:
        assert query.path is not None
        try:  # only a name the library lists; nothing on the server's disk is looked at
            self.library.index.files.index(query.path)
        except ValueError:
            raise LookupError(f"{query.path!r} is not a track of the library; give a path exactly as the library "
                              "lists it, or upload the file") from None
        return self._answer(query.path, query.path, query)

    def by_upload(self, path: Path, name: str, query: SimilarQuery) -> dict[str, Any]:
        with self._lock:
            seed = self.library.seed(str(path))
        return self._answer(name, seed, query)

    def _answer(self, name: str, seed: Any, query: SimilarQuery) -> dict[str, Any]:
        from focaltag.library.search import similar_tracks

        seeds = [self.library.seed(seed)] if isinstance(seed, str) else [seed]
        matches = similar_tracks(self.library.index, seeds, query.n, where=query.where)
        return {"seed": name, "results": [{"file": m.file, "score": round(m.score, 6)} for m in matches]}


def json_fields(body: bytes) -> dict[str, Any]:
    """The fields of a JSON request body (ConfigError when it is not a JSON object)."""
    try:
        obj = json.loads(body or b"{}")
    except ValueError:
        raise ConfigError("the body is not JSON; send {\"path\": ...} or a multipart upload") from None
    if not isinstance(obj, dict):
        raise ConfigError("the JSON body must be an object such as {\"path\": \"Music/a.mp3\", \"n\": 10}")
    return obj


def add_similar_route(app: Any, library: SimilarService | None, service: Any, config: Any) -> None:
    """``POST /api/v1/similar`` on ``app``: answered from ``library``, admitted through the tag ``service``'s
    queue; a server without a library answers 404."""
    import asyncio
    import shutil
    import tempfile

    from fastapi.responses import JSONResponse
    from starlette.requests import ClientDisconnect

    from focaltag.errors import FocaltagError
    from focaltag.serve.service import Busy
    from focaltag.serve.uploads import UploadError, UploadTimeout, UploadTooLarge, receive_upload

    def _error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.post("/api/v1/similar", summary="the library's tracks nearest to an uploaded file or a library track",
              description="multipart with one 'file' (and optional 'n', 'where'), or a JSON body {path, n, where}; "
              "answers {seed, results: [{file, score}]} best first (score: cosine similarity)")
    async def similar(request: Request) -> Response:
        if library is None:
            return _error(404, "this server has no library; start it with 'focaltag serve --library TAGS.jsonl'")
        deadline = asyncio.get_running_loop().time() + config.request_timeout
        folder = Path(tempfile.mkdtemp(prefix="focaltag-serve-"))
        try:
            return await _similar(request, library, folder, deadline)
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _similar(request: Request, lib: SimilarService, folder: Path, deadline: float) -> Response:
        content_type = request.headers.get("content-type", "")
        upload = None
        try:
            if content_type.split(";")[0].strip().lower() == "application/json":
                query = parse_query(json_fields(await request.body()))
                if query.path is None:
                    raise FocaltagError("give {\"path\": ...} (a track as the library lists it) or upload a file")
            else:
                upload = await receive_upload(request.stream(), content_type, folder,
                                              max_bytes=config.max_upload_bytes,
                                              content_length=request.headers.get("content-length"), max_files=1,
                                              read_timeout=config.read_timeout, deadline=deadline)
                query = parse_query(upload.fields)
                if query.path is not None:
                    raise FocaltagError("send either a file or a path, not both")
        except UploadTooLarge as err:
            return _error(413, str(err), Connection="close")
        except UploadTimeout as err:
            return _error(408, str(err), Connection="close")
        except (UploadError, FocaltagError) as err:
            return _error(400, str(err))
        try:
            with service.admit():
                left = max(deadline - asyncio.get_running_loop().time(), 0.001)
                if upload is None:
                    work = asyncio.to_thread(lib.by_path, query)
                else:
                    seed = upload.files[0]
                    work = asyncio.to_thread(lib.by_upload, seed.path, seed.name, query)
                return JSONResponse(await asyncio.wait_for(work, left))
        except Busy as err:
            return _error(503, str(err), **{"Retry-After": "1"})
        except TimeoutError:
            return _error(504, "the request took longer than the server's --request-timeout")
        except LookupError as err:
            return _error(404, str(err.args[0]))
        except FocaltagError as err:
            message = str(err)
            if upload is not None:  # never the server's private folder: the name the client gave
                for private in (str(upload.files[0].path), str(folder)):
                    message = message.replace(private, upload.files[0].name)
            return _error(400, message)
