"""The FastAPI application: the page at ``/``, ``/healthz`` and the JSON API under ``/api/v1``.

Every error is JSON ``{"error": "..."}`` with its status (400 bad input, undecodable audio or a Host the server
does not answer, 401 token, 404, 408 stalled upload, 413 upload too large, 503 queue full, 504 past
``--request-timeout``). FastAPI's interactive docs are off: their assets come from a CDN, and the page must work
without internet; the schema is at ``/api/v1/openapi.json``.

A tag request is read and spooled in full (under the read deadline) before it takes a place in the queue, so a
client that stalls holds a connection, never a tagging slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from focaltag._version import __version__
from focaltag.errors import FocaltagError
from focaltag.serve.config import ServeConfig
from focaltag.serve.guard import HostGuard, allowed_host_names
from focaltag.serve.registry import ModelRegistry
from focaltag.serve.service import Busy, TagService, TimedOut, parse_options
from focaltag.serve.similar import SimilarService, add_similar_route
from focaltag.serve.uploads import UploadError, UploadTimeout, UploadTooLarge, receive_upload

__all__ = ["create_app", "STATIC_DIR", "API_PREFIX"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
API_PREFIX = "/api/"

_TAG_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                         "description": "audio files (repeat the field for several)"},
                "model": {"type": "string", "description": "a name from /api/v1/models, or 'ensemble' (default)"},
                "top_k": {"type": "integer", "default": 5, "description": "length of each result's 'top'"},
                "chunks": {"type": "integer", "description": "evenly spaced chunks per track (default 16)"},
                "taggram": {"type": "boolean", "default": False,
                            "description": "add a PNG taggram as base64 under 'taggram_png'"},
            },
        }}},
    },
    "responses": {
        "200": {"description": "a JSON array in the schema of 'focaltag tag --format json' (one object per file; "
                "a file that could not be decoded is {file, error})"},
        "400": {"description": "{error}: bad form fields, malformed multipart, or no file could be decoded"},
        "401": {"description": "{error}: missing or wrong bearer token"},
        "408": {"description": "{error}: the upload stalled past --read-timeout"},
        "413": {"description": "{error}: the request is over --max-upload-mb"},
        "503": {"description": "{error}: the queue is full; retry later"},
        "504": {"description": "{error}: the request passed --request-timeout"},
    },
}


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _authorised(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(registry: ModelRegistry, config: ServeConfig, *, service: TagService | None = None,
               library: SimilarService | None = None) -> FastAPI:
    """The application over already-loaded models; the worker pool is shut down with the app. With ``library``
    (``serve --library``) ``POST /api/v1/similar`` answers from it."""
    service = service or TagService(registry, config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        logger.info("focaltag serve: http://%s:%d/ with %s (Ctrl-C stops)", _url_host(config.host), config.port,
                    ", ".join(registry.names))
        yield
        service.close()

    app = FastAPI(title="focaltag", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json",
                  description="Tag music with mood/theme probabilities. Upload audio to POST /api/v1/tag.")
    app.state.service, app.state.registry, app.state.config = service, registry, config
    app.add_middleware(HostGuard, allowed=allowed_host_names(config.host, config.allowed_hosts))

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if config.token and request.url.path.startswith(API_PREFIX) and not _authorised(request, config.token):
            return _error(401, "missing or wrong token; send the header 'Authorization: Bearer <token>'",
                          **{"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return _error(400, f"bad request: {first.get('msg', exc)} at {'.'.join(map(str, first.get('loc', ())))}")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", summary="liveness: always open, even with a token")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "models": registry.names,
                "token_required": bool(config.token)}

    @app.get("/api/v1/models", summary="the loaded models: name, tags, input length, thresholds (no paths)")
    async def models() -> dict[str, Any]:
        return {"default": registry.default, "models": registry.describe(),
                "max_upload_bytes": config.max_upload_bytes,
                "library": None if library is None else {"tracks": library.size,
                                                         "embedding_model": library.library.embedding_model}}

    add_similar_route(app, library, service, config)

    @app.post("/api/v1/tag", summary="tag uploaded audio files", openapi_extra=_TAG_BODY)
    async def tag(request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + config.request_timeout
        folder = Path(tempfile.mkdtemp(prefix="focaltag-serve-"))  # mode 0700: private to this user
        try:
            return await _tag(request, folder, deadline)
        except ClientDisconnect:  # nobody is left to answer: one line, no traceback
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            logger.info("focaltag serve: %s disconnected before its request was read; dropped", client)
            return Response(status_code=400)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _tag(request: Request, folder: Path, deadline: float) -> Response:
        try:
            upload = await receive_upload(request.stream(), request.headers.get("content-type", ""), folder,
                                          max_bytes=config.max_upload_bytes,
                                          content_length=request.headers.get("content-length"),
                                          max_files=config.max_files, read_timeout=config.read_timeout,
                                          deadline=deadline)
            options = parse_options(upload.fields, registry)
        except UploadTooLarge as err:
            return _error(413, str(err), Connection="close")
        except UploadTimeout as err:
            return _error(408, str(err), Connection="close")
        except (UploadError, FocaltagError) as err:
            return _error(400, str(err))
        try:
            with service.admit():  # only now, with the whole body on disk, is a place in the queue taken
                left = deadline - asyncio.get_running_loop().time()
                results = await service.run(upload.files, options, timeout=max(left, 0.001))
        except Busy as err:
            return _error(503, str(err), **{"Retry-After": "1"})
        except TimedOut as err:
            return _error(504, str(err))
        failed = [r for r in results if "error" in r]
        if len(failed) == len(results):
            return JSONResponse({"error": failed[0]["error"], "results": results}, status_code=400)
        return JSONResponse(results)

    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
