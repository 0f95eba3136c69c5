"""What a tenant may do, resolved once per request at the edge (see docs/ARCHITECTURE.md,
"Request path"): the largest `k`, the search `ef`, the calling key's rate limit and the filter
allow-list, from the tenant's configured policy (`auth.tenants`, `qdrant.tenant_ef`), the key's
own settings and the defaults.

The API checks a request against it before anything runs (`limit_k`, `check_filters`), so the
pipeline receives a request it may run as is, and the policy to run it with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from app.errors import InvalidRequest
from app.schemas import MAX_K, RagRequest
from app.security import Principal
from app.settings import Settings

# the value type of each payload-index type; exact types: a bool is an int to isinstance(), and
# must not pass for an integer key
FILTER_VALUE_TYPES: Mapping[str, type] = MappingProxyType({"keyword": str, "integer": int, "bool": bool})


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    tenant: str
    max_k: int  # largest `k` (and `top_n`) the tenant may ask for
    ef: int  # search-time hnsw_ef when the request names none
    ef_max: int  # upper clamp of any ef, requested or configured
    filter_keys: Mapping[str, str]  # allow-listed filter key -> its payload-index type
    rate_limit: int | None = None  # requests per rate window for the calling key; None: unlimited

    @classmethod
    def for_tenant(cls, settings: Settings, tenant: str) -> TenantPolicy:
        """The tenant's policy without a rate limit (auth off, or a caller inside the process)."""
        configured = settings.auth.tenants.get(tenant)
        max_k = MAX_K
        if configured is not None and configured.max_k is not None:
            max_k = min(MAX_K, configured.max_k)
        q = settings.qdrant
        return cls(tenant, max_k, q.tenant_ef.get(tenant, q.ef_default), q.ef_max, q.filter_keys)

    @classmethod
    def for_principal(cls, settings: Settings, who: Principal) -> TenantPolicy:
        """The caller's policy: its tenant's, with the rate limit of its key (the key's own, else
        the tenant's, else the default). Without a key (auth off) nobody is rate limited."""
        policy = cls.for_tenant(settings, who.tenant)
        if who.key_id is None:
            return policy
        configured = settings.auth.tenants.get(who.tenant)
        tenant_limit = configured.rate_limit if configured is not None else None
        return replace(policy, rate_limit=who.key_rate_limit or tenant_limit or settings.auth.rate_limit)

    def search_ef(self, requested: int | None) -> int:
        ef = requested if requested is not None else self.ef
        return max(1, min(ef, self.ef_max))

    def limit_k(self, req: RagRequest) -> RagRequest:
        """`req` within the tenant's `k`: an explicit `k` or `top_n` above it is refused; the
        default `k` (the caller did not send one) is cut to it."""
        if ("k" in req.model_fields_set and req.k > self.max_k) or (req.top_n or 0) > self.max_k:
            raise InvalidRequest(f"k and top_n must be at most {self.max_k} for this tenant")
        if req.k > self.max_k:
            return req.model_copy(update={"k": self.max_k})
        return req

    def check_filters(self, req: RagRequest) -> None:
        """Every filter key is allow-listed and its values have the key's type."""
        filters = req.filters()
        bad = sorted(set(filters) - set(self.filter_keys))
        if bad:
            allowed = ", ".join(sorted(self.filter_keys))
            raise InvalidRequest(f"filter keys not allowed: {', '.join(bad)} (allowed: {allowed})")
        for key, values in filters.items():
            kind = self.filter_keys[key]
            if not all(type(v) is FILTER_VALUE_TYPES[kind] for v in values):
                raise InvalidRequest(f"filter key {key!r} takes {kind} values")
