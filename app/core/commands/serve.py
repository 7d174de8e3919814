"""``quantdesk serve``: the library over an OpenAI-compatible HTTP API.

Binds 127.0.0.1 by default; any other address needs ``--api-key``. Models load
on demand by id (``GET /v1/models`` lists them) and are unloaded, least
recently used first, when another needs the memory. Ctrl+C stops the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

# The server's web stack (FastAPI, uvicorn) loads only when it runs, not with every command.
from app.core.serve import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from app.core.serve.server import ServerConfig

GIB = 1024**3
KEY_ENV = "QUANTDESK_API_KEY"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the library's models over an OpenAI-compatible API",
        description="Serve every usable model in the library over an OpenAI-compatible HTTP "
        "API (/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /metrics). "
        "Models load on demand; requests to one model queue in order.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every route (or set {KEY_ENV}); "
        "needed to bind anything but 127.0.0.1",
    )
    p.add_argument(
        "--cors",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="allow browser pages from ORIGIN (repeatable; off by default)",
    )
    p.add_argument("--ctx", type=int, metavar="N", help="context length for every model")
    p.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload (-1: all)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per model")
    p.add_argument(
        "--max-queue", type=int, default=32, metavar="N", help="waiting requests per model (32)"
    )
    p.add_argument(
        "--memory-gib",
        type=float,
        metavar="GIB",
        help="memory the loaded models may take together (default: what is available now)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from app.core.serve.pool import PoolOptions
    from app.core.serve.server import ServerConfig

    key = args.api_key or os.environ.get(KEY_ENV) or None
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=key,
        cors_origins=tuple(args.cors),
        pool=PoolOptions(
            n_ctx=args.ctx,
            n_gpu_layers=args.gpu_layers,
            n_threads=args.threads,
            max_queue=max(1, args.max_queue),
            memory_budget=int(args.memory_gib * GIB) if args.memory_gib else None,
        ),
    )


def run(args: argparse.Namespace) -> int:
    from app.core.serve.server import LocalServer

    config = config_from_args(args)
    server = LocalServer(config)
    models = server.catalog.models()
    sys.stderr.write(
        f"Serving {len(models)} model{'s' if len(models) != 1 else ''} at "
        f"{config.base_url(config.port)}"
        + (" (API key required)" if config.api_key else "")
        + "; Ctrl+C stops.\n"
    )
    for m in models[:20]:
        sys.stderr.write(f"  {m.id}\n")
    if len(models) > 20:
        sys.stderr.write(f"  … and {len(models) - 20} more (GET /v1/models)\n")
    sys.stderr.flush()
    server.serve_forever()
    return 0
