"""The Authenticator that turns an `Authorization: Bearer` token (app/apikeys.py) into a
Principal (key id, tenant, admin, the key's rate limit).

scrypt is slow on purpose, so verification outcomes (good and bad) are cached for a short time
under HMAC-SHA256(process secret, token): the plain token is never a cache key, and the
fingerprint is worthless outside this process.

An unknown or revoked key id costs the same as a wrong secret: a derivation against a dummy hash
with the configured keys' parameters, so the answer time does not tell which ids exist. Failed
derivations are bounded per client address (`auth.failed_per_client` per `auth.failed_window_s`):
past that, the address gets 429 without any derivation until the window moves on, so random
secrets cannot spend the gateway's CPU (or the derivation slots legitimate keys need).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cachetools import LRUCache, TTLCache

from app.apikeys import DEFAULT_N, DEFAULT_P, DEFAULT_R, DKLEN, SALT_BYTES, KeyHash, split_token
from app.errors import RateLimited, Unauthorized

if TYPE_CHECKING:
    from app.settings import ApiKeySettings, AuthSettings, Settings

log = logging.getLogger("rag.auth")

CACHE_MAX_ENTRIES = 4096
CLIENTS_MAX_ENTRIES = 4096
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `key_id` None means auth is off (open mode)."""

    key_id: str | None
    tenant: str
    admin: bool
    key_rate_limit: int | None  # the key's own rate limit, if it has one (app/policy.py resolves)


@dataclass(frozen=True, slots=True)
class _Key:
    config: ApiKeySettings
    hash: KeyHash
    principal: Principal


def load_keys(auth: AuthSettings) -> list[ApiKeySettings]:
    """Inline keys plus the keys file. A configured but unreadable file fails start-up."""
    from pydantic import TypeAdapter, ValidationError

    from app.settings import ApiKeySettings

    keys = list(auth.keys)
    if auth.keys_file is not None:
        path = Path(auth.keys_file)
        try:
            raw = path.read_text(encoding="utf-8")
            keys += TypeAdapter(list[ApiKeySettings]).validate_json(raw)
        except (OSError, ValidationError) as exc:
            raise ValueError(f"auth.keys_file {path}: {exc}") from exc
    seen: set[str] = set()
    for k in keys:
        if k.id in seen:
            raise ValueError(f"API key id {k.id!r} is configured twice")
        seen.add(k.id)
    return keys


class Authenticator:
    """Bearer token -> Principal. Open (every caller is the default tenant) when no keys exist."""

    def __init__(
        self,
        settings: Settings,
        keys: list[ApiKeySettings],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        auth = settings.auth
        self._ttl = auth.cache_ttl_s
        self._clock = clock
        self._fingerprint_key = secrets.token_bytes(32)
        # fingerprint -> principal (None: a token known to be wrong), least recently used out first
        self._cache: TTLCache[bytes, Principal | None] | None = None
        if self._ttl > 0:
            self._cache = TTLCache(maxsize=CACHE_MAX_ENTRIES, ttl=self._ttl, timer=clock)
        self._slots = asyncio.Semaphore(auth.verify_concurrency)
        self._keys: dict[str, _Key] = {}
        for k in keys:
            try:
                parsed = KeyHash.parse(k.hash)
            except ValueError as exc:
                raise ValueError(f"API key {k.id!r}: {exc}") from exc
            self._keys[k.id] = _Key(k, parsed, Principal(k.id, k.tenant, k.admin, k.rate_limit))
        self.enabled = bool(self._keys)
        self.open_principal = Principal(None, settings.server.default_tenant, True, None)
        # an unknown id is checked against this, with the parameters of the configured keys
        model = next(iter(self._keys.values())).hash if self._keys else None
        n, r, p = (model.n, model.r, model.p) if model is not None else (DEFAULT_N, DEFAULT_R, DEFAULT_P)
        dklen = len(model.digest) if model is not None else DKLEN
        self._dummy = KeyHash(n, r, p, secrets.token_bytes(SALT_BYTES), secrets.token_bytes(dklen))
        self._failed_limit = auth.failed_per_client
        self._failed_window_s = float(auth.failed_window_s)
        # address -> (window start, count), least recently used out first
        self._failed: LRUCache[str, tuple[float, int]] = LRUCache(maxsize=CLIENTS_MAX_ENTRIES)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        keys = load_keys(settings.auth)
        if settings.auth.required and not keys:
            raise ValueError("auth.required is set but no API keys are configured")
        return cls(settings, keys)

    def announce(self) -> None:
        if not self.enabled:
            log.warning(
                "auth off: no API keys configured; every caller is the default tenant, "
                "unauthenticated and not rate limited (set RAG_AUTH__KEYS for production)",
                extra={"tenant": self.open_principal.tenant},
            )
            return
        active = [k for k in self._keys.values() if not k.config.revoked]
        log.info(
            "auth on",
            extra={
                "keys": len(active),
                "revoked": len(self._keys) - len(active),
                "tenants": len({k.config.tenant for k in active}),
            },
        )

    def _fingerprint(self, token: str) -> bytes:
        return hmac.new(self._fingerprint_key, token.encode(), hashlib.sha256).digest()

    def _cached(self, fp: bytes) -> tuple[bool, Principal | None]:
        if self._cache is None:
            return False, None
        hit = self._cache.get(fp, _MISSING)  # one lookup: an entry may expire between two
        if hit is _MISSING:
            return False, None
        return True, hit  # type: ignore[return-value]

    def _remember(self, fp: bytes, principal: Principal | None) -> None:
        if self._cache is not None:
            self._cache[fp] = principal

    def _failures(self, client: str) -> tuple[float, int]:
        """(window start, failed derivations) of `client` in its current window."""
        now = self._clock()
        start, count = self._failed.get(client, (now, 0))
        if now - start >= self._failed_window_s:
            start, count = now, 0
        return start, count

    def _check_failure_budget(self, client: str) -> None:
        start, count = self._failures(client)
        if count >= self._failed_limit:
            retry = max(1, math.ceil(start + self._failed_window_s - self._clock()))
            log.info("auth refused: failure budget spent", extra={"client": client})
            raise RateLimited(
                f"too many failed authentications from this address; retry in {retry}s",
                {"Retry-After": str(retry)},
            )

    def _record_failure(self, client: str) -> None:
        start, count = self._failures(client)
        self._failed[client] = (start, count + 1)

    async def authenticate(self, token: str | None, client: str = "") -> Principal:
        """The caller's Principal, or Unauthorized (or RateLimited: `client`, the caller's address,
        failed too many derivations). `token` is the Bearer credential."""
        if not self.enabled:
            return self.open_principal
        if not token:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        parts = split_token(token)
        if parts is None:
            raise Unauthorized("malformed API key", error="invalid_token")
        key = self._keys.get(parts[0])
        known = key is not None and not key.config.revoked
        fp = self._fingerprint(token)
        found, principal = self._cached(fp)
        if not found:
            # an unknown or revoked id costs what a wrong secret costs: no oracle for key ids
            self._check_failure_budget(client)
            check = key.hash if known and key is not None else self._dummy
            async with self._slots:  # scrypt is CPU and memory heavy: bound how many run at once
                ok = await asyncio.to_thread(check.verify, token)
            principal = key.principal if ok and known and key is not None else None
            self._remember(fp, principal)
            if principal is None:
                self._record_failure(client)
        if principal is None:
            reason = "wrong_secret" if known else ("revoked" if key is not None else "unknown_key")
            extra = {"reason": reason, "key_id": parts[0]} if key is not None else {"reason": reason}
            log.info("auth failed", extra=extra)
            raise Unauthorized("invalid or revoked API key", error="invalid_token")
        return principal
