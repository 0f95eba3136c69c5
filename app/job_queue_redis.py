"""The shared job queue on Redis (`RAG_JOBS__QUEUE=redis`): a Stream, one consumer group, and a
lease per job (see app/job_queue.py for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from app.job_queue import Claim, JobLost, QueueUnavailable
from app.resilience.tasks import stop_task

log = logging.getLogger("rag.jobs")
T = TypeVar("T")
GROUP = "rag-jobs"
MARGIN = 0.2  # share of a lease a worker does not count on (the time its renewal took to land)
RECONCILE_S = 30.0  # at least this often the stream is compared with the directory
CALL_S = 2.0  # bound on one queue call
POLL_S = 0.5  # an idle worker asks for a job this often


class RedisClaim:
    def __init__(self, queue: RedisQueue, entry_id: bytes, job_id: str) -> None:
        self.job_id = job_id
        self._q = queue
        self._entry = entry_id
        self._lease: Lock | None = None
        self._deadline = 0.0  # monotonic: until then the lease is surely this worker's

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        q = self._q
        lease = q.lease_lock(self.job_id)
        sent = time.monotonic()
        try:
            async with asyncio.timeout(CALL_S):
                mine = bool(await lease.acquire())
        except (rx.RedisError, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not mine:  # another worker runs it; the entry comes round again after a lease
            yield False
            return
        self._lease, self._deadline = lease, sent + q.lease_s * (1 - MARGIN)
        try:
            yield True
        finally:
            self._lease, self._deadline = None, 0.0
            with contextlib.suppress(rx.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(CALL_S):
                    await lease.release()  # a lost lease is someone else's: nothing released

    def check(self) -> None:
        if time.monotonic() >= self._deadline:
            raise JobLost(f"the lease on job {self.job_id} ran out; another worker may hold it")

    async def guard(self, run: Coroutine[Any, Any, T]) -> T:
        job = asyncio.create_task(run, name=f"job-{self.job_id}")
        beat = asyncio.create_task(self._renew(), name=f"lease-{self.job_id}")
        try:
            await asyncio.wait({job, beat}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                return job.result()
            raise JobLost(f"the lease on job {self.job_id} was lost; another worker takes it")
        finally:
            for task in (job, beat):
                if not await stop_task(task, 2 * CALL_S):
                    log.error("job task did not stop", extra={"job_id": self.job_id, "task": task.get_name()})

    async def _renew(self) -> None:
        """Renew the lease (and the entry's idle time) until it is lost; then return."""
        q, lease = self._q, self._lease
        assert lease is not None
        while True:
            await asyncio.sleep(q.lease_s / 4)
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                log.warning("job lease not renewed in time", extra={"job_id": self.job_id})
                return
            sent = time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    await lease.reacquire()
            except rx.LockError:
                self._deadline = 0.0
                return  # expired, and maybe taken: the job is no longer ours
            except (rx.RedisError, OSError, TimeoutError):
                continue  # tried again while the lease lasts
            self._deadline = sent + q.lease_s * (1 - MARGIN)
            # best effort: an entry claimed by another worker meanwhile is still acknowledged
            with contextlib.suppress(rx.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(q.lease_s / 4):
                    await q.redis.xclaim(q.stream, GROUP, q.consumer, 0, [self._entry], justid=True)

    async def done(self) -> None:
        q = self._q
        try:
            async with asyncio.timeout(CALL_S), q.redis.pipeline(transaction=True) as pipe:
                pipe.xack(q.stream, GROUP, self._entry)
                pipe.xdel(q.stream, self._entry)
                await pipe.execute()
        except (rx.RedisError, OSError, TimeoutError) as exc:
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
        reconcile_s: float = RECONCILE_S,
    ) -> None:
        self.lease_s, self.reconcile_s = lease_s, max(reconcile_s, lease_s)
        # its own connections: bounded by CALL_S, not by the cache's 100 ms
        self.redis = Redis.from_url(
            url,
            socket_timeout=CALL_S,
            socket_connect_timeout=connect_timeout_s,
            max_connections=8,
        )
        self.prefix = prefix
        self.stream = f"{prefix}:queue"
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._unfinished = unfinished  # the job ids the directory holds unfinished
        self._ready = False  # group made and the stream reconciled with the directory
        self._next_autoclaim = 0.0
        self._autoclaim_from = "0-0"  # XAUTOCLAIM's cursor over the pending entries
        self._next_reconcile = 0.0

    def lease_lock(self, job_id: str) -> Lock:
        return self.redis.lock(
            f"{self.prefix}:lease:{job_id}", timeout=self.lease_s, blocking=False, thread_local=False
        )

    async def put(self, job_id: str) -> None:
        try:
            async with asyncio.timeout(CALL_S):
                await self.redis.xadd(self.stream, {"job": job_id})
        except (rx.RedisError, OSError, TimeoutError) as exc:
            # the job is on disk, queued: it is added when the worker reaches Redis again
            self._ready = False
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str) -> AsyncIterator[bool]:
        """The job's lease for a moment (a cancel of a queued job): False if a worker holds it,
        or Redis cannot be reached."""
        lock = self.lease_lock(job_id)
        try:
            async with asyncio.timeout(CALL_S):
                mine = bool(await lock.acquire())
        except (rx.RedisError, OSError, TimeoutError):
            mine = False
        try:
            yield mine
        finally:
            if mine:
                with contextlib.suppress(rx.RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(CALL_S):
                        await lock.release()

    async def prepare(self) -> None:
        """Make the group and reconcile the stream with the directory (the worker does it too,
        after any error); raises QueueUnavailable."""
        try:
            await self._setup()
        except (rx.RedisError, OSError) as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def next(self, wait_s: float) -> Claim | None:
        """A job to take, or None after `min(wait_s, POLL_S)`. It polls, every call bounded:
        redis-py reads the reply of a blocking XREADGROUP with no socket timeout, and a worker
        cancelled at shutdown was seen to stay in such a read for good."""
        try:
            async with asyncio.timeout(2 * CALL_S):
                claim = await self._poll()
        except (rx.RedisError, OSError, TimeoutError) as exc:
            self._ready = False  # NOGROUP (Redis forgot) or unreachable: set up again after it
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if claim is None:
            await asyncio.sleep(min(wait_s, POLL_S))
        return claim

    async def _poll(self) -> Claim | None:
        if not self._ready or time.monotonic() >= self._next_reconcile:
            await self._setup()
        if time.monotonic() >= self._next_autoclaim:  # entries whose worker died
            ms = int(self.lease_s * 1000)
            reply: Any = await self.redis.xautoclaim(
                self.stream, GROUP, self.consumer, ms, self._autoclaim_from, count=1
            )
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            self._autoclaim_from = cursor
            if cursor == "0-0":  # the whole pending list was looked at: rest a while
                self._next_autoclaim = time.monotonic() + self.lease_s / 2
            if reply[1]:
                return self._claim(*reply[1][0])
        read: Any = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=1)
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
        self._next_reconcile = time.monotonic() + self.reconcile_s

    async def aclose(self) -> None:
        await self.redis.aclose()


def _job_of(fields: Any) -> str:
    """The job id of a stream entry ("" for an entry that names none: it is dropped)."""
    job = fields.get(b"job", b"") if isinstance(fields, dict) else b""
    return job.decode("ascii", "replace") if isinstance(job, bytes) else ""
