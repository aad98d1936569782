"""``focaltag serve``: a local web page and JSON API over loaded models (thin layer over ``focaltag.serve``)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from focaltag._defaults import DEFAULT_MODEL
from focaltag.cli._common import add_command
from focaltag.inference.precision import TAG_PRECISIONS

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "serve", func=run_serve, help="web page and JSON API to tag uploaded music",
                    description="Serve a page (drop audio files, see their tags and taggram) and a JSON API "
                    "(POST /api/v1/tag, GET /api/v1/models, schema at /api/v1/openapi.json) on this machine. "
                    "Each model is loaded once at start; a request picks one by name or 'ensemble' (their "
                    "mean). Requires pip install 'focaltag[serve]'.")
    p.add_argument("-m", "--model", dest="models", action="append", default=None, metavar="M",
                   help="checkpoint (.pt), run folder, ensemble folder or catalogue name; repeat to serve "
                   f"several (default: {DEFAULT_MODEL}, the paper's ensemble)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but a loopback address is reachable from other machines")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--token", default=None, metavar="T",
                   help="require 'Authorization: Bearer T' under /api/ (default: $FOCALTAG_SERVE_TOKEN if set)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, metavar="MB",
                   help="largest request body; larger uploads get HTTP 413")
    p.add_argument("--queue", type=int, default=16, metavar="N",
                   help="requests admitted at once (running + waiting); more get HTTP 503")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="requests tagged at the same time (the models are shared, never copied)")
    p.add_argument("--read-timeout", type=float, default=30.0, metavar="S",
                   help="cut off an upload that sends nothing for S seconds (HTTP 408); uploads are read in full "
                   "before they take a place in the queue")
    p.add_argument("--request-timeout", type=float, default=300.0, metavar="S",
                   help="longest time from a request's first byte to its answer; a request still tagging then gets "
                   "HTTP 504 and its worker moves on")
    p.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                   help="also answer requests for this Host name (repeatable; '*' for any); by default only "
                   "127.0.0.1, localhost, [::1] and --host are answered, which keeps web pages out (DNS rebinding)")
    p.add_argument("--chunks", default="auto", metavar="N|auto",
                   help="evenly spaced chunks per track unless a request says otherwise; auto (the default): "
                   "adaptive chunking, at least 4 and at most 16, as 'focaltag tag --chunks auto'")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help="per-tag thresholds from 'focaltag evaluate --save-thresholds' for every model; adds yes/no "
                   "decisions. Default: a catalogue model's own, where it has them; 'none' turns decisions off")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--precision", default=None, choices=TAG_PRECISIONS,
                   help="inference precision, as 'focaltag tag --precision' (default: the Tagger's)")
    p.add_argument("--library", default=None, metavar="TAGS.jsonl",
                   help="also answer POST /api/v1/similar (and show similar tracks on the page) from this library "
                   "run ('focaltag tag DIR -o TAGS.jsonl --embeddings'); its model is loaded at start")


def run_serve(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError, FocaltagError
    from focaltag.serve.config import ServeConfig, require_serve

    require_serve()
    from focaltag.inference.adaptive import parse_chunks

    chunks = parse_chunks(args.chunks)
    from focaltag.devices import resolve_device

    resolve_device(args.device)  # before the server starts: '--device gpu' is one line, not a failed request
    config = ServeConfig.from_options(host=args.host, port=args.port, token=args.token,
                                      max_upload_mb=args.max_upload_mb, queue=args.queue, workers=args.workers,
                                      read_timeout=args.read_timeout, request_timeout=args.request_timeout,
                                      allowed_hosts=tuple(args.allowed_hosts))
    from focaltag.inference import InferenceOptions, configure_runtime
    from focaltag.inference.options import thresholds_option
    from focaltag.serve.registry import ModelRegistry

    options = InferenceOptions(n_chunks=chunks or 16, adaptive=chunks is None, device=args.device,
                               thresholds=thresholds_option(args.thresholds), precision=args.precision or "auto")
    configure_runtime()
    if args.models:
        registry = ModelRegistry(args.models, options)
    else:
        try:
            registry = ModelRegistry([DEFAULT_MODEL], options)
        except FocaltagError as err:
            failure = ConfigError(f"serve: the default model {DEFAULT_MODEL} could not be loaded ({err}); "
                                  "pass a checkpoint with -m MODEL")
            failure.exit_code = err.exit_code
            raise failure from None
    library = None
    if getattr(args, "library", None) is not None:
        from focaltag.serve.similar import SimilarService

        library = SimilarService(args.library, device=args.device)
        library.warm()
    from focaltag.serve.server import run_server

    run_server(registry, config, access_log=bool(getattr(args, "verbose", False)), library=library)
    return 0
