"""`python -m app.snapshots create|list|restore NAME|delete NAME`: the snapshots of the embedded
engine's collection for a stopped gateway and for cron jobs (docs/ARCHITECTURE.md, "Snapshots").

Configured by the gateway's own RAG_* variables (RAG_QDRANT__PATH, RAG_QDRANT__COLLECTION,
RAG_SNAPSHOTS__DIR, RAG_SNAPSHOTS__KEEP, RAG_EMBEDDER__*). `create` and `restore` own the
collection while they run: they refuse (exit 3) while a gateway serves it; snapshot a running
gateway with `POST /admin/snapshots`. Output is JSON on stdout; errors go to stderr (exit 2 for
a refused snapshot or an unknown name).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from pydantic import ValidationError

from app.errors import NotSupported, RagError
from app.settings import Settings

EXIT_REFUSED = 2
EXIT_LOCKED = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app.snapshots",
        description="Snapshots of the embedded collection (RAG_QDRANT__PATH) in RAG_SNAPSHOTS__DIR. "
        "create and restore need the gateway stopped (exit 3 while it runs); a running gateway "
        "has POST /admin/snapshots and POST /admin/snapshots/{name}/restore.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="snapshot the collection; then keep the newest RAG_SNAPSHOTS__KEEP")
    sub.add_parser("list", help="list the snapshots, newest first")
    for name, text in (
        (
            "restore",
            "verify a snapshot (checksum, manifest, collection, embedder), then make it the collection",
        ),
        ("delete", "delete one snapshot and its checksum file"),
    ):
        sub.add_parser(name, help=text).add_argument("name", help="a snapshot name, as listed")
    return p


async def run(settings: Settings, args: argparse.Namespace) -> Any:
    from app.clients.vectorstore.edge import EdgeStore
    from app.clients.vectorstore.layout import OwnerLock, sweep
    from app.clients.vectorstore.swap import SwappableStore
    from app.snapshots.service import Snapshots

    q = settings.qdrant
    if q.url:
        raise NotSupported("the CLI works on the embedded engine; with a Qdrant server use the HTTP API")
    if args.command in ("list", "delete"):  # files only: the engine is not opened
        snaps = Snapshots(settings, SwappableStore(_Closed(q.collection)), None)  # type: ignore[arg-type]
        if args.command == "list":
            return {"snapshots": [i.as_dict() for i in snaps.list()]}
        await snaps.delete(args.name)
        return {"deleted": args.name}

    lock = OwnerLock(q.path, q.collection)  # CollectionLocked while a gateway serves it
    try:
        sweep(q.path, q.collection)
        from app.clients.embedder import embedder_from_settings

        embedder = embedder_from_settings(settings.embedder)
        try:
            store = SwappableStore(EdgeStore(q))
            snaps = Snapshots(settings, store, embedder, on_swap=lambda: _bump(settings))
            try:
                if args.command == "create":
                    snaps.sweep()
                    return (await snaps.create()).as_dict()
                return {"restored": (await snaps.restore(args.name)).as_dict()}
            finally:
                await store.aclose()
        finally:
            await embedder.aclose()
    finally:
        lock.close()


class _Closed:
    """The store of a command that only handles files."""

    def __init__(self, collection: str) -> None:
        self.collection = collection

    async def aclose(self) -> None:
        return None


async def _bump(settings: Settings) -> None:
    """A restore changes what answers are right: the shared answer-cache generation moves on, so
    the gateway serves no answer cached before it (docs/ARCHITECTURE.md, "Answer cache")."""
    if not (settings.answer_cache.enabled and settings.redis.url):
        return
    from app.answer_cache import AnswerCache
    from app.clients.redis_client import RedisClient, breaker_config
    from app.resilience import BreakerRegistry

    redis = RedisClient.from_settings(
        settings.redis, BreakerRegistry().create("redis", breaker_config(settings.redis))
    )
    if redis is None:
        return
    try:
        a = settings.answer_cache
        await AnswerCache(redis, settings.qdrant.collection, a.max_bytes, a.ttl_s, a.local_ttl_s).bump()
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_REFUSED
    from app.clients.vectorstore.layout import CollectionLocked

    try:
        out = asyncio.run(run(settings, args))
    except CollectionLocked as exc:
        print(f"error: {exc}; stop the gateway or use the HTTP API", file=sys.stderr)
        return EXIT_LOCKED
    except RagError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
