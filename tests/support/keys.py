"""API keys made the way operators make them (scripts/hash_api_key.py's code), at a cheap scrypt cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.apikeys import hash_token, new_token

TEST_SCRYPT_N = 2**10  # the production default is 2**14; the format and the checks are the same


@dataclass(frozen=True)
class Key:
    id: str
    tenant: str
    token: str
    admin: bool = False
    revoked: bool = False
    rate_limit: int | None = None

    def entry(self) -> dict[str, Any]:
        """The key's entry in RAG_AUTH__KEYS."""
        out: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "hash": hash_token(self.token, n=TEST_SCRYPT_N),
            "admin": self.admin,
            "revoked": self.revoked,
        }
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        return out

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def header_line(self) -> bytes:
        """The Authorization header as raw HTTP/1.1 bytes."""
        return f"Authorization: Bearer {self.token}\r\n".encode()


def make_key(key_id: str, tenant: str, **kw: Any) -> Key:
    return Key(key_id, tenant, new_token(key_id), **kw)
