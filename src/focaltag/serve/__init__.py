"""``focaltag serve``: a local web page and a small JSON API that tag uploaded music with loaded models.

The server stack (FastAPI, uvicorn, python-multipart) is the optional extra ``focaltag[serve]``; importing this
package does not import it, so the CLI can say in one line how to install it when it is missing.

Layout: :mod:`.config` (validated settings), :mod:`.registry` (models loaded once at start),
:mod:`.uploads` (streamed multipart uploads into a private folder, size-limited), :mod:`.service` (bounded
worker pool and queue), :mod:`.app` (the FastAPI application factory), :mod:`.server` (uvicorn runner).
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "ServeConfig": "focaltag.serve.config",
    "ModelRegistry": "focaltag.serve.registry",
    "TagService": "focaltag.serve.service",
    "create_app": "focaltag.serve.app",
    "run_server": "focaltag.serve.server",
    "require_serve": "focaltag.serve.config",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
