"""A replica's job worker alone, for the shared-queue tests: a JobRunner on the Redis queue and a
shared jobs directory, whose batches append the document ids they take to a file (flushed, so a
SIGKILL loses nothing written) and take `--batch-s` each; `--stall-after N --stall-s S` blocks the
whole process for S seconds, once, when a batch comes after N documents. It runs until killed.

    python -P tests/support/queue_worker.py JOBS_DIR REDIS_URL PREFIX LEASE_S LOG [--batch-s S]
        [--stall-after N --stall-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from app.document_in import line_parser
from app.ingest import Document, IngestStats
from app.job_queue_redis import RedisQueue
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
    ap.add_argument("--stall-after", type=int, default=0, help="documents taken before the stall")
    ap.add_argument("--stall-s", type=float, default=0.0, help="the event loop blocked this long, once")
    args = ap.parse_args()
    taken = 0
    store = JobStore(args.jobs_dir)
    log = args.log.open("a")

    async def sink(docs: list[Document]) -> IngestStats:
        nonlocal taken
        await asyncio.sleep(args.batch_s)
        if args.stall_s and taken >= args.stall_after:
            time.sleep(args.stall_s)  # the whole process stops (a GC pause, a frozen VM): no renewal
            args.stall_s = 0.0
            log.write("STALL-END\n")
        taken += len(docs)
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
