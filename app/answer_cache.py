"""The whole-answer cache: a repeated /rag request answered without embedding, search or rerank,
and never from before a write (see docs/ARCHITECTURE.md, "Answer cache").

Two tiers: in process (LRU bounded in bytes) and Redis (shared by replicas, with a TTL). The key
covers everything an answer depends on: the tenant, the canonical request, the embedder,
reranker and collection identities, and the collection **generation**. Every write through the
gateway bumps the generation before it returns; with Redis the generation is one shared value (a
random token each write replaces, never a value seen before: a Redis restarted empty or an
evicted key starts a new one), so a write through one replica changes every replica's next key.
While Redis is unreachable the generation is this process's own: local writes still invalidate
at once, but another replica's writes cannot be seen, so entries made then live at most
`local_ttl_s`.

Every lookup reads the generation, so concurrent lookups share one read of it: a read answers
only the requests that were waiting before it was sent (a read already in flight may predate a
request, and with it a write that returned before that request came).

Entries hold the answer's JSON without its `request_id` (each hit answers with its own). An
answer stored under two keys (canonical and raw) is held once in process, under the first, and
the second points at it, so the byte bound counts it once.
Concurrent identical misses compute once per process (single flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from cachetools import LRUCache
from redis.asyncio import Redis

from app.clients.redis_client import RedisClient, RedisUnavailable

GENERATION_KEY = "answer:gen:"
# KEYS: the generation key. ARGV: a fresh token -> the generation (the token, if there was none).
# Run only when a plain GET found no generation: a GET costs both sides less than a script
CURRENT_GENERATION = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
ANSWER_KEY = "answer:v1:"
REQUEST_ID_PREFIX = b'{"request_id":'
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Generation:
    value: str
    shared: bool  # read from Redis (every replica sees the same), or this process's own


@dataclass(frozen=True, slots=True)
class Entry:
    rest: bytes  # the answer's JSON after its request_id (empty in an alias)
    expires_at: float
    alias_of: str | None = None  # another key of the same answer: held once, counted once


def split_answer(body: bytes, request_id: str) -> bytes:
    """The answer without its request_id: what follows the first field, which the pipeline writes
    first. The id is serialized as orjson writes it (a client's id may hold quotes)."""
    prefix = REQUEST_ID_PREFIX + orjson.dumps(request_id)
    if not body.startswith(prefix):
        raise ValueError("an answer starts with its request_id")
    return body[len(prefix) :]


def join_answer(request_id: str, rest: bytes) -> bytes:
    return b"".join((REQUEST_ID_PREFIX, orjson.dumps(request_id), rest))  # one copy of a 40 KB answer


def _token() -> str:
    return secrets.token_hex(8)


def answer_key(generation: str, identity: str, tenant: str, canonical_request: bytes) -> str:
    h = hashlib.sha256()
    for part in (generation.encode(), identity.encode(), tenant.encode(), canonical_request):
        h.update(part)
        h.update(b"\x00")
    return ANSWER_KEY + h.hexdigest()


class AnswerCache:
    def __init__(
        self,
        redis: RedisClient | None,
        collection: str,
        max_bytes: int,
        ttl_s: float,
        local_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.local_ttl_s = local_ttl_s
        self._gen_key = GENERATION_KEY + collection
        self._local_gen = 0
        self._unshared_write = False
        self._clock = clock
        self._entries: LRUCache[str, Entry] = LRUCache(maxsize=max_bytes, getsizeof=_entry_size)
        self._max_entry = max(1, max_bytes // 8)  # one answer never evicts most of the cache
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._next_read: asyncio.Future[Generation] | None = None  # the batch not yet sent
        self._reader: asyncio.Task[None] | None = None
        # the shared generation, made (a fresh token) by the first reader that finds none
        self._current: Any = None if redis is None else redis.client.register_script(CURRENT_GENERATION)

    async def generation(self) -> Generation:
        """The current generation: Redis's shared one (a random token), else this process's own.

        Concurrent requests share one read, and never one sent before they arrived: a read in
        flight serves only those that came before it; later ones wait for the next, so each
        still sees every write that returned before it arrived (see the module docstring)."""
        if self.redis is None:
            return Generation(f"l{self._local_gen}", shared=False)
        batch = self._next_read
        if batch is None:
            batch = self._next_read = asyncio.get_running_loop().create_future()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read_batches())
        return await asyncio.shield(batch)

    async def _read_batches(self) -> None:
        """Send one read per batch of waiting requests, until none waits."""
        try:
            while (batch := self._next_read) is not None:
                self._next_read = None  # who arrives from now on waits for the next read
                try:
                    batch.set_result(await self._read())
                except asyncio.CancelledError:  # shutting down: so are the waiters
                    batch.cancel()
                    raise
                except Exception as exc:  # a bug of ours: each waiter's request fails with it
                    batch.set_exception(exc)
        finally:
            self._reader = None
            if self._next_read is not None:
                self._next_read.cancel()
                self._next_read = None

    async def _read(self) -> Generation:
        """One read of the shared generation; a local write whose shared bump failed is bumped
        first, so Redis never serves from before it."""
        assert self.redis is not None
        try:
            if self._unshared_write:
                # cleared before the await: a bump failing meanwhile sets it again
                self._unshared_write = False
                try:
                    await self._new_shared()
                except BaseException:
                    self._unshared_write = True
                    raise
            raw = await self.redis.call(lambda r: r.get(self._gen_key))
            if raw is None:  # none yet (a new or emptied Redis): one token, set once for everyone
                raw = await self.redis.call(lambda _: self._current(keys=[self._gen_key], args=[_token()]))
            return Generation("s" + (raw.decode() if isinstance(raw, bytes) else str(raw)), shared=True)
        except RedisUnavailable:
            return Generation(f"l{self._local_gen}", shared=False)

    async def _new_shared(self) -> None:
        """A new shared generation: a random token, never a value seen before, so that neither a
        Redis restarted empty nor an evicted key brings an old generation (and its answers in
        any replica's in-process tier) back, as a counter starting again at 0 would."""
        assert self.redis is not None
        token = _token()
        await self.redis.call(lambda r: r.set(self._gen_key, token))

    async def bump(self) -> None:
        """A write happened: every answer cached before it is unreachable from now on. Called
        before the write's response is sent."""
        self._local_gen += 1
        self._entries.clear()  # unreachable anyway: give the memory back
        if self.redis is not None:
            try:
                await self._new_shared()
            except BaseException as exc:  # (cancelled too: the write itself has happened)
                # other replicas cannot know until Redis is back: their entries are bounded by
                # their TTLs (documented); ours replaces the shared generation before using it
                self._unshared_write = True
                if not isinstance(exc, RedisUnavailable):
                    raise

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and entry.alias_of is not None:
            # the answer is held under its first key; gone from there, this key misses too
            entry = self._entries.get(entry.alias_of)
            if entry is None or entry.alias_of is not None:
                entry = None
                self._entries.pop(key, None)
        if entry is not None:
            if entry.expires_at > now:
                return entry.rest
            self._entries.pop(key, None)
        if self.redis is None:
            return None
        try:
            raw = await self.redis.call(lambda r: r.get(key))
        except RedisUnavailable:
            return None
        if not isinstance(raw, bytes):
            return None
        self._remember(key, raw, self.local_ttl_s)
        return raw

    async def put(self, keys: str | Sequence[str], rest: bytes, generation: Generation) -> None:
        """Store one answer under each key; the shared tier gets them in one round trip."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        ttl_s = self.ttl_s if generation.shared else self.local_ttl_s
        if self._remember(keys[0], rest, ttl_s):
            # the other keys point at the first: the in-process tier holds and counts it once
            expires_at = self._entries[keys[0]].expires_at
            for key in keys[1:]:
                self._entries[key] = Entry(b"", expires_at, alias_of=keys[0])
        if self.redis is None or not generation.shared:
            return
        ttl = max(1, round(self.ttl_s))

        async def store(r: Redis) -> object:
            if len(keys) == 1:
                return await r.set(keys[0], rest, ex=ttl)
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, rest, ex=ttl)
            return await pipe.execute()

        with contextlib.suppress(RedisUnavailable):  # the local tier still has it
            await self.redis.call(store)

    def _remember(self, key: str, rest: bytes, ttl_s: float) -> bool:
        """Keep `rest` under `key` in process; False when it is too large to keep."""
        if len(rest) > self._max_entry:
            return False
        self._entries[key] = Entry(rest, self._clock() + ttl_s)
        return True

    async def single_flight(
        self, key: str, compute: Callable[[], Awaitable[tuple[bytes | None, T]]]
    ) -> tuple[bytes | None, T | None]:
        """Compute a missing answer once per process: `compute` returns (the answer to cache,
        or None when it must not be cached, such as a degraded one; the caller's own result).
        Concurrent identical misses wait and get (the answer, None); if there is none to share,
        each computes its own."""
        flight = self._flights.get(key)
        if flight is not None:
            shared = await asyncio.shield(flight)
            if shared is not None:
                return shared, None
            return await compute()
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        try:
            rest, own = await compute()
        except BaseException:
            fut.set_result(None)
            raise
        finally:
            self._flights.pop(key, None)
        fut.set_result(rest)
        return rest, own


def _entry_size(entry: Entry) -> int:
    return len(entry.rest) + 200  # the key and the entry's own overhead, roughly (an alias: 200)
