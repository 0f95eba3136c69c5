"""Where jobs wait for a worker (see docs/ARCHITECTURE.md, "Ingestion jobs").

`LocalQueue` (the default): an asyncio queue in the process that was given the job; the job's
directory lock (flock) keeps processes sharing the jobs directory from running one job twice.

`RedisQueue` (`RAG_JOBS__QUEUE=redis`, Qdrant server backend): a Redis Stream read by one consumer
group that every replica joins, so any replica may take a job. The jobs directory (uploads and
state) is shared by the replicas and stays the source of truth; the stream only says which jobs
wait. A worker holds a job by a lease (a redis-py `Lock` with a timeout, renewed while it runs,
together with the stream entry's idle time). A replica that dies stops renewing; once the lease
has run out the entry is claimed (XAUTOCLAIM) by another replica, which takes the lease and
resumes the job after its last committed batch. A worker that cannot renew its lease (another
replica took it, or Redis was out of reach for a whole lease) stops the job at once, leaving it to
whoever holds the lease. A finished job's entry is acknowledged and deleted.

Redis forgets (restarted without persistence, stream deleted): whenever the worker (re)connects,
it recreates the group and adds every unfinished job of the directory that has no entry. An entry
added twice is harmless: a job runs only under its lease, and a finished job's entry is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from app.job_store import FINISHED, JobStore
from app.settings import Settings

log = logging.getLogger("rag.jobs")
T = TypeVar("T")
GROUP = "rag-jobs"


class QueueUnavailable(Exception):
    """The shared queue could not be reached; the message says why."""


class JobLost(Exception):
    """The worker's lease on the job ran out or was taken: another worker owns the job now."""


class Claim(Protocol):
    job_id: str

    def hold(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """True while this worker may run the job; False if another worker holds it."""

    async def guard(self, run: Awaitable[T]) -> T:
        """Run the job; raises JobLost (the run cancelled) when the hold is lost mid-way."""

    async def done(self) -> None:
        """The job is finished: it is never handed out again."""


class LocalClaim:
    def __init__(self, job_id: str, lock: Callable[[str], contextlib.AbstractContextManager[bool]]) -> None:
        self.job_id = job_id
        self._lock = lock

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        with self._lock(self.job_id) as mine:
            yield mine

    async def guard(self, run: Awaitable[T]) -> T:
        return await run

    async def done(self) -> None:
        return None


class LocalQueue:
    shared = False

    def __init__(self, lock: Callable[[str], contextlib.AbstractContextManager[bool]]) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._lock = lock

    async def prepare(self) -> None:
        return None

    async def put(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)

    async def next(self, wait_s: float) -> Claim | None:
        try:
            async with asyncio.timeout(wait_s):
                return LocalClaim(await self._queue.get(), self._lock)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        return None


class RedisClaim:
    def __init__(self, queue: RedisQueue, entry_id: bytes, job_id: str) -> None:
        self.job_id = job_id
        self._q = queue
        self._entry = entry_id
        self._lease: Lock | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        q = self._q
        lease = q.redis.lock(
            f"{q.prefix}:lease:{self.job_id}", timeout=q.lease_s, blocking=False, thread_local=False
        )
        try:
            mine = bool(await lease.acquire())
        except (rx.RedisError, OSError) as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not mine:  # another worker runs it; the entry comes round again after a lease
            yield False
            return
        self._lease = lease
        try:
            yield True
        finally:
            self._lease = None
            with contextlib.suppress(rx.RedisError, OSError):
                await lease.release()  # a lost lease is someone else's now: nothing to release

    async def guard(self, run: Awaitable[T]) -> T:
        job = asyncio.ensure_future(run)
        beat = asyncio.create_task(self._renew(), name=f"lease-{self.job_id}")
        try:
            await asyncio.wait({job, beat}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                return job.result()
            raise JobLost(f"the lease on job {self.job_id} was lost; another worker takes it")
        finally:
            for task in (job, beat):
                task.cancel()
            await asyncio.gather(job, beat, return_exceptions=True)

    async def _renew(self) -> None:
        """Renew the lease and the entry's idle time until the lease is lost; then return."""
        q, lease = self._q, self._lease
        assert lease is not None
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(q.lease_s / 3)
            try:
                async with asyncio.timeout(q.lease_s / 3):
                    await lease.reacquire()
                    await q.redis.xclaim(q.stream, GROUP, q.consumer, 0, [self._entry], justid=True)
                renewed = time.monotonic()
            except rx.LockError:
                return  # expired, and maybe taken: the job is no longer ours
            except (rx.RedisError, OSError, TimeoutError) as exc:
                if time.monotonic() - renewed >= q.lease_s:
                    log.warning(
                        "job lease not renewed for a whole lease",
                        extra={"job_id": self.job_id, "error": str(exc)},
                    )
                    return

    async def done(self) -> None:
        q = self._q
        try:
            async with q.redis.pipeline(transaction=True) as pipe:
                pipe.xack(q.stream, GROUP, self._entry)
                pipe.xdel(q.stream, self._entry)
                await pipe.execute()
        except (rx.RedisError, OSError) as exc:
            # the entry comes round again; its job is finished, so it is then dropped
            log.warning("job entry not acknowledged", extra={"job_id": self.job_id, "error": str(exc)})


class RedisQueue:
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str,
        lease_s: float,
        unfinished: Callable[[], list[str]],
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.lease_s = lease_s
        self.block_s = min(5.0, lease_s / 2)
        # its own connections: a blocking read must not use the cache's 100 ms socket timeout
        self.redis = Redis.from_url(
            url,
            socket_timeout=self.block_s + 5.0,
            socket_connect_timeout=connect_timeout_s,
            max_connections=8,
        )
        self.prefix = prefix
        self.stream = f"{prefix}:queue"
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._unfinished = unfinished  # the job ids the directory holds unfinished
        self._ready = False  # group made and the stream reconciled with the directory
        self._next_autoclaim = 0.0

    async def put(self, job_id: str) -> None:
        try:
            await self.redis.xadd(self.stream, {"job": job_id})
        except (rx.RedisError, OSError) as exc:
            # the job is on disk, queued: it is added when the worker reaches Redis again
            self._ready = False
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def prepare(self) -> None:
        """Make the group and reconcile the stream with the directory (the worker does it too,
        after any error); raises QueueUnavailable."""
        try:
            await self._setup()
        except (rx.RedisError, OSError) as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def next(self, wait_s: float) -> Claim | None:
        try:
            if not self._ready:
                await self._setup()
            if time.monotonic() >= self._next_autoclaim:  # entries whose worker died
                self._next_autoclaim = time.monotonic() + self.lease_s / 2
                ms = int(self.lease_s * 1000)
                reply: Any = await self.redis.xautoclaim(
                    self.stream, GROUP, self.consumer, ms, "0-0", count=1
                )
                if reply[1]:
                    return self._claim(*reply[1][0])
            block = int(min(wait_s, self.block_s) * 1000)
            read: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=1, block=block
            )
        except (rx.RedisError, OSError) as exc:
            self._ready = False  # NOGROUP (Redis forgot) or unreachable: set up again after it
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc
        for _stream, entries in read or ():
            for entry_id, fields in entries:
                return self._claim(entry_id, fields)
        return None

    def _claim(self, entry_id: bytes, fields: Any) -> Claim:
        return RedisClaim(self, entry_id, _job_of(fields))

    async def _setup(self) -> None:
        with contextlib.suppress(rx.ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        entries: Any = await self.redis.xrange(self.stream)
        present = {_job_of(fields) for _id, fields in entries}
        missing = [job_id for job_id in self._unfinished() if job_id not in present]
        for job_id in missing:
            await self.redis.xadd(self.stream, {"job": job_id})
        if missing:
            log.warning("unfinished jobs queued again in Redis", extra={"count": len(missing)})
        self._ready = True

    async def aclose(self) -> None:
        await self.redis.aclose()


JobQueue = LocalQueue | RedisQueue


def queue_from_settings(settings: Settings, store: JobStore) -> JobQueue | None:
    """The shared queue when `RAG_JOBS__QUEUE=redis`; None: the runner's own local queue."""
    if settings.jobs.queue != "redis" or not settings.redis.url:
        return None
    return RedisQueue(
        settings.redis.url,
        f"jobs:{settings.qdrant.collection}",  # one queue per collection the replicas serve
        settings.jobs.lease_s,
        lambda: [j.job_id for j in store.all() if j.state not in FINISHED],
    )


def _job_of(fields: Any) -> str:
    """The job id of a stream entry ("" for an entry that names none: it is dropped)."""
    job = fields.get(b"job", b"") if isinstance(fields, dict) else b""
    return job.decode("ascii", "replace") if isinstance(job, bytes) else ""
