"""API key tokens and their salted hashes.

A token is `<key id>.<secret>`. The configuration holds only a salted scrypt hash of the whole
token (`scrypt$<n>$<r>$<p>$<salt>$<digest>`, base64url), printed by scripts/hash_api_key.py; the
plain token is never stored or logged. The key id is not secret (it names the key in logs and
in the rate limiter); it picks the one hash to check, so a request costs at most one scrypt.
Verification derives the hash with the key's own salt and compares it with
`hmac.compare_digest`. app/security.py authenticates with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
DKLEN = 32
SALT_BYTES = 16
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_SECRET_CHARS = 16
MAX_TOKEN_CHARS = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class KeyHash:
    """A parsed `scrypt$n$r$p$salt$digest` string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> KeyHash:
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError("not a `scrypt$n$r$p$salt$digest` key hash")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
        except ValueError as exc:
            raise ValueError("malformed key hash") from exc
        if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError("key hash parameters out of range")
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("key hash salt or digest too short")
        return cls(n, r, p, salt, digest)

    def derive(self, token: str) -> bytes:
        return hashlib.scrypt(
            token.encode(),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=256 * self.r * (self.n + self.p + 2),
            dklen=len(self.digest),
        )

    def verify(self, token: str) -> bool:
        # constant time in the position of the first differing byte
        return hmac.compare_digest(self.derive(token), self.digest)

    def __str__(self) -> str:
        return f"{SCHEME}${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"


def hash_token(token: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """The configuration hash of `token`, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    partial = KeyHash(n, r, p, salt, b"\x00" * DKLEN)
    return str(KeyHash(n, r, p, salt, partial.derive(token)))


def new_token(key_id: str) -> str:
    if not KEY_ID_RE.match(key_id):
        raise ValueError("key id must be 1..64 of A-Z a-z 0-9 _ -")
    return f"{key_id}.{secrets.token_urlsafe(32)}"


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    key_id, dot, secret = token.partition(".")
    if not dot or not KEY_ID_RE.match(key_id) or len(secret) < MIN_SECRET_CHARS:
        return None
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        return None
    return key_id, secret
