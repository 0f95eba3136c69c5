"""Where jobs wait for a worker (see docs/ARCHITECTURE.md, "Ingestion jobs").

`LocalQueue` (the default): an asyncio queue in the process that was given the job; the job's
directory lock (flock) keeps processes sharing the jobs directory from running one job twice.

`RedisQueue` (`RAG_JOBS__QUEUE=redis`, Qdrant server backend): a Redis Stream read by one consumer
group that every replica joins, so any replica may take a job. The jobs directory (uploads and
state) is shared by the replicas and stays the source of truth; the stream only says which jobs
wait. A worker holds a job by a lease (a redis-py `Lock` with a timeout, renewed while it runs,
together with the stream entry's idle time). A replica that dies stops renewing; once the lease
has run out the entry is claimed (XAUTOCLAIM) by another replica, which takes the lease and
resumes the job after its last committed batch. A worker counts its lease from the moment it
sent its last successful renewal, with a margin, and checks it before every write of the job's
state (`Claim.check`): a worker that could not renew in time (Redis out of reach, a network or
event-loop stall) stops at its next write, before another replica can hold the lease. A finished
job's entry is acknowledged and deleted.

Redis forgets (restarted without persistence, stream deleted), or an entry was never added (a
replica died between saving a job and adding it): whenever the worker (re)connects, and every
`RECONCILE_S` besides, it recreates the group and adds every unfinished job of the directory that
has no entry. An entry added twice is harmless: a job runs only under its lease, and a finished
job's entry is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from app.job_store import FINISHED, JobStore
from app.settings import Settings

T = TypeVar("T")


class QueueUnavailable(Exception):
    """The shared queue could not be reached; the message says why."""


class JobLost(Exception):
    """The worker's lease on the job ran out or was taken: another worker may own the job now."""


class Claim(Protocol):
    job_id: str

    def hold(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """True while this worker may run the job; False if another worker holds it."""

    def check(self) -> None:
        """Raises JobLost unless this worker still holds the job (called before each write)."""

    async def guard(self, run: Coroutine[Any, Any, T]) -> T:
        """Run the job; raises JobLost (the run cancelled) when the hold is lost mid-way."""

    async def done(self) -> None:
        """The job is finished: it is never handed out again."""


@contextlib.contextmanager
def job_lock(store: JobStore, job_id: str) -> Iterator[bool]:
    """True while this process holds the job's lock; False if another process does. The kernel
    drops the lock when the holder dies, even by SIGKILL."""
    try:
        fd = os.open(store.root / job_id / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield False  # the job is gone (pruned)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class LocalClaim:
    def __init__(self, job_id: str, lock: Callable[[str], contextlib.AbstractContextManager[bool]]) -> None:
        self.job_id = job_id
        self._lock = lock

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        with self._lock(self.job_id) as mine:
            yield mine

    def check(self) -> None:
        return None

    async def guard(self, run: Coroutine[Any, Any, T]) -> T:
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

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str) -> AsyncIterator[bool]:
        """The job's lock for a moment (a cancel of a queued job): False if a worker holds it."""
        with self._lock(job_id) as mine:
            yield mine

    async def next(self, wait_s: float) -> Claim | None:
        try:
            async with asyncio.timeout(wait_s):
                return LocalClaim(await self._queue.get(), self._lock)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        return None


class JobQueue(Protocol):
    shared: bool  # one queue for the replicas (a job found running may be another's)

    async def prepare(self) -> None: ...

    async def put(self, job_id: str) -> None: ...

    def lease(self, job_id: str) -> contextlib.AbstractAsyncContextManager[bool]: ...

    async def next(self, wait_s: float) -> Claim | None: ...

    async def aclose(self) -> None: ...


def queue_from_settings(settings: Settings, store: JobStore) -> JobQueue | None:
    """The shared queue when `RAG_JOBS__QUEUE=redis`; None: the runner's own local queue."""
    if settings.jobs.queue != "redis" or not settings.redis.url:
        return None
    from app.job_queue_redis import RedisQueue  # redis: only for the shared queue

    return RedisQueue(
        settings.redis.url,
        f"jobs:{settings.qdrant.collection}",  # one queue per collection the replicas serve
        settings.jobs.lease_s,
        lambda: [j.job_id for j in store.all() if j.state not in FINISHED],
    )
