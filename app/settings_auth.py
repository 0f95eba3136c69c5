"""The auth groups of the settings (`RAG_AUTH__*`): API keys, per-tenant policy, rate limits.
Part of app/settings.py, which re-exports them; kept apart only for the size of one module."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class ApiKeySettings(BaseModel):
    """One API key: its id (the part before the dot of the token), tenant and salted hash."""

    model_config = {"extra": "forbid"}

    id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="key id: the token is `<id>.<secret>`")
    tenant: str = Field(pattern=TENANT_PATTERN, description="the tenant every request of this key acts as")
    hash: str = Field(min_length=1, repr=False, description="salted scrypt hash from scripts/hash_api_key.py")
    admin: bool = Field(False, description="may call POST/DELETE /documents (any tenant)")
    revoked: bool = Field(False, description="answered 401 as if the key did not exist")
    rate_limit: int | None = Field(None, ge=1, description="requests per rate window; overrides the tenant's")


class TenantPolicy(BaseModel):
    model_config = {"extra": "forbid"}

    max_k: int | None = Field(None, ge=1, description="largest `k` this tenant may ask for")
    rate_limit: int | None = Field(None, ge=1, description="requests per rate window for each of its keys")


class AuthSettings(BaseModel):
    keys: list[ApiKeySettings] = Field(
        default_factory=list,
        description='API keys as JSON: `[{"id", "tenant", "hash", "admin", "revoked", "rate_limit"}]`; '
        "auth is on whenever any key is configured",
    )
    keys_file: Path | None = Field(None, description="JSON file of more keys, same shape; read at start-up")
    required: bool = Field(False, description="refuse to start without API keys (production)")
    tenants: dict[str, TenantPolicy] = Field(
        default_factory=dict, description='per-tenant policy as JSON: `{"acme": {"max_k", "rate_limit"}}`'
    )
    rate_limit: int = Field(600, ge=1, description="requests per rate window per key, unless overridden")
    rate_window_s: int = Field(60, ge=1, le=86400, description="rate-limit sliding window, seconds")
    cache_ttl_s: float = Field(30.0, ge=0, description="how long a verified key is remembered; 0 = never")
    verify_concurrency: int = Field(2, ge=1, description="key hash verifications running at once")
    failed_per_client: int = Field(
        20, ge=1, description="failed key verifications per client address per window; then 429"
    )
    failed_window_s: int = Field(60, ge=1, le=86400, description="window of `failed_per_client`, seconds")
