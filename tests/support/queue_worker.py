"""A replica's job worker alone, for the shared-queue tests: a JobRunner on the Redis queue and a
shared jobs directory, whose batches append the document ids they take to a file (flushed, so a
SIGKILL loses nothing written) and take `--batch-s` each. It runs until it is killed.

    python -P tests/support/queue_worker.py JOBS_DIR REDIS_URL PREFIX LEASE_S LOG [--batch-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from app.document_in import line_parser
from app.ingest import Document, IngestStats
from app.job_queue import RedisQueue
from app.job_store import FINISHED, JobStore
from app.jobs import JobRunner


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs_dir", type=Path)
    ap.add_argument("redis_url")
    ap.add_argument("prefix")
    ap.add_argument("lease_s", type=float)
    ap.add_argument("log", type=Path)
    ap.add_argument("--batch-s", type=float, default=0.05)
    args = ap.parse_args()
    store = JobStore(args.jobs_dir)
    log = args.log.open("a")

    async def sink(docs: list[Document]) -> IngestStats:
        await asyncio.sleep(args.batch_s)
        log.write("".join(f"{d.doc_id}\n" for d in docs))
        log.flush()
        os.fsync(log.fileno())
        return IngestStats(documents=len(docs), chunks=len(docs), upserted=len(docs), skipped_unchanged=0)

    queue = RedisQueue(
        args.redis_url,
        args.prefix,
        args.lease_s,
        lambda: [j.job_id for j in store.all() if j.state not in FINISHED],
    )
    runner = JobRunner(store, lambda tenant: line_parser(tenant, {}), sink, batch_docs=5, queue=queue)
    await runner.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
