"""`python -m app`: run the gateway with uvicorn (uvloop + httptools, with the header-read
timeout and header-size limit of app/api/http_guard.py).

Every other setting is an environment variable (RAG_*, see README); the flags here only
override where it listens and how many workers run.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="RAG Gateway: POST /rag -> embed, search Qdrant, rerank (Redis-cached). "
        "Configured by RAG_* environment variables; see the README.",
    )
    parser.add_argument("--host", help="listen address (default RAG_SERVER__HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default $PORT, RAG_SERVER__PORT or 8080)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; the embedded Qdrant engine allows only 1, "
        "a Qdrant server via RAG_QDRANT__URL allows many)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    port = args.port or int(os.environ.get("PORT", settings.server.port))
    if args.workers > 1 and not settings.qdrant.url:
        print(
            "error: the embedded Qdrant engine lives in one process; run --workers 1, "
            "or point RAG_QDRANT__URL at a Qdrant server to run several workers",
            file=sys.stderr,
        )
        return 2
    if args.log_level:
        os.environ["RAG_LOGGING__LEVEL"] = args.log_level.upper()
    from app.observability.metrics import multiprocess_for_workers

    multiprocess_for_workers(args.workers)  # workers' metrics summed on /metrics

    import uvicorn

    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        http="app.api.http_guard:GuardedHttpToolsProtocol",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
