#!/usr/bin/env python3
"""Create the Qdrant collection (idempotently) and load passages into it.

Sources (one of):
  (none)        the built-in synthetic corpus (~2,000 passages on ~20 topics)
  --beir DIR    a BEIR-format dataset: DIR/corpus.jsonl lines {"_id", "title", "text"}
  --jsonl FILE  lines {"id", "text", ...payload}

Reads the same RAG_* settings as the gateway: the embedded engine under RAG_QDRANT__PATH by
default, or a Qdrant server when RAG_QDRANT__URL is set. Re-running is safe: point ids are
derived from (tenant, doc id), so the same passages are overwritten, not duplicated.
Prints the collection info in the shape of Qdrant's `GET /collections/<name>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.chunking import Chunker
from app.clients.embedder import embedder_from_settings
from app.clients.vectorstore import vectorstore_from_settings
from app.corpus import beir_docs, jsonl_docs, synthetic_docs
from app.errors import DependencyError
from app.ingest import ingest_documents
from app.settings import QdrantSettings, Settings


class Progress:
    """A plain progress bar on stderr (no extra dependency)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.t0 = total, label, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        width = 30
        filled = int(width * self.done / max(1, self.total))
        rate = self.done / max(1e-9, time.monotonic() - self.t0)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} ({rate:.0f}/s)"
        )
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def run(args: argparse.Namespace) -> int:
    settings = Settings()
    qdrant: QdrantSettings = settings.qdrant
    if args.collection:
        # validated like RAG_QDRANT__COLLECTION: the name becomes a directory of the embedded engine
        qdrant = QdrantSettings.model_validate({**qdrant.model_dump(), "collection": args.collection})
    tenant = args.tenant or settings.server.default_tenant
    # read (and so check) the whole input before touching the store: bad input must not leave
    # an empty collection behind, nor cost the one --recreate dropped
    if args.beir:
        docs = list(beir_docs(args.beir, tenant))
    elif args.jsonl:
        docs = list(jsonl_docs(args.jsonl, tenant))
    else:
        docs = list(synthetic_docs(args.n, tenant))
    embedder = embedder_from_settings(settings.embedder)
    store = vectorstore_from_settings(qdrant)
    try:
        if args.recreate:
            await store.drop()
            store = vectorstore_from_settings(qdrant)
        created = await store.ensure_collection(embedder.dim, embedder.id)
        print(f"collection {qdrant.collection!r}: {'created' if created else 'exists'}", file=sys.stderr)
        if args.if_empty and not created and await store.count() > 0:
            print("collection is not empty; nothing loaded (--if-empty)", file=sys.stderr)
        else:
            chunker = Chunker.from_settings(settings.embedder, settings.chunking)
            latest = {(d.tenant, d.doc_id): d for d in docs}
            chunks = sum(len(chunker.split(d.text)) for d in latest.values())
            missed: dict[str, int] = {}
            stats = await ingest_documents(
                store,
                embedder,
                docs,
                args.batch_size,
                Progress(chunks, "embedding"),
                verify_ef=qdrant.ef_default,
                on_missed=missed.update,
                chunker=chunker,
                skip_unchanged=False,
            )
            print(f"loaded {stats.documents} documents ({stats.upserted} chunks)", file=sys.stderr)
            if missed:
                # the gateway that will serve this collection runs in another process: it cannot
                # know which points the index missed, so say it here
                print(
                    f"warning: the index did not find {sum(missed.values())} of the loaded passages by "
                    f"their own vectors ({missed}); searches may miss them until the collection is "
                    "rebuilt (see RUNBOOK, RagGatewaySearchExactFallback)",
                    file=sys.stderr,
                )
        print(json.dumps({"result": await store.info(), "status": "ok"}, indent=2))
    finally:
        await store.aclose()
        await embedder.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--beir", type=Path, metavar="DIR", help="BEIR-format dataset directory")
    src.add_argument("--jsonl", type=Path, metavar="FILE", help='JSONL file of {"id", "text", ...}')
    parser.add_argument("--n", type=int, default=2000, help="synthetic passages to generate (default 2000)")
    parser.add_argument("--collection", help="collection name (default RAG_QDRANT__COLLECTION or rag_docs)")
    parser.add_argument("--tenant", help="tenant of the loaded passages (default RAG_SERVER__DEFAULT_TENANT)")
    parser.add_argument("--recreate", action="store_true", help="drop the collection first")
    parser.add_argument("--if-empty", action="store_true", help="load only if the collection is empty")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="passages embedded per batch (default 16: less padding)"
    )
    args = parser.parse_args(argv)
    if args.beir and not (args.beir / "corpus.jsonl").is_file():
        parser.error(f"{args.beir} has no corpus.jsonl")
    if args.jsonl and not args.jsonl.is_file():
        parser.error(f"{args.jsonl} is not a file")
    try:
        return asyncio.run(run(args))
    except (ValidationError, SettingsError) as exc:
        print(f"error: invalid settings or arguments: {exc}", file=sys.stderr)
        return 2
    except (DependencyError, OSError, UnicodeDecodeError) as exc:
        # an unreachable Qdrant, a missing model directory, an unreadable file
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
