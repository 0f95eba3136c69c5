"""TenantPolicy: resolved from the tenant's configured policy, the key and the defaults; the
checks the edge runs before the pipeline (k, top_n, filter keys and their value types)."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.policy import TenantPolicy
from app.schemas import MAX_K, RagRequest
from app.security import Principal
from app.settings import Settings


@pytest.fixture(scope="module")
def conf() -> Settings:
    return Settings(
        auth={
            "tenants": {"acme": {"max_k": 30, "rate_limit": 7}, "big": {"max_k": 10_000}},
            "rate_limit": 600,
        },
        qdrant={
            "tenant_ef": {"globex": 128, "huge": 4096},
            "ef_default": 64,
            "ef_max": 512,
            "filter_keys": {"source": "keyword", "year": "integer", "public": "bool"},
        },
    )


def test_defaults_apply_to_a_tenant_without_policy(conf: Settings) -> None:
    p = TenantPolicy.for_tenant(conf, "nobody")
    assert (p.tenant, p.max_k, p.ef, p.rate_limit) == ("nobody", MAX_K, 64, None)
    assert p.search_ef(None) == 64


def test_max_k_and_ef_come_from_the_tenant_and_are_clamped(conf: Settings) -> None:
    assert TenantPolicy.for_tenant(conf, "acme").max_k == 30
    assert TenantPolicy.for_tenant(conf, "big").max_k == MAX_K  # never above the schema's maximum
    assert TenantPolicy.for_tenant(conf, "globex").search_ef(None) == 128
    assert TenantPolicy.for_tenant(conf, "huge").search_ef(None) == 512  # the configured ef, clamped
    assert TenantPolicy.for_tenant(conf, "globex").search_ef(9999) == 512  # a requested ef, clamped
    assert TenantPolicy.for_tenant(conf, "globex").search_ef(16) == 16


def test_rate_limit_is_the_keys_else_the_tenants_else_the_default(conf: Settings) -> None:
    def limit(tenant: str, own: int | None, key_id: str | None = "k1") -> int | None:
        return TenantPolicy.for_principal(conf, Principal(key_id, tenant, False, own)).rate_limit

    assert limit("acme", 3) == 3
    assert limit("acme", None) == 7
    assert limit("globex", None) == 600
    assert limit("acme", 3, key_id=None) is None  # auth off: nobody is limited


def test_an_explicit_k_over_the_limit_is_refused_the_default_is_cut(conf: Settings) -> None:
    acme = TenantPolicy.for_tenant(conf, "acme")
    with pytest.raises(InvalidRequest, match="k and top_n must be at most 30 for this tenant"):
        acme.limit_k(RagRequest(q="x", k=31))
    with pytest.raises(InvalidRequest, match="at most 30"):
        acme.limit_k(RagRequest(q="x", top_n=31))  # the default k, an explicit top_n
    assert acme.limit_k(RagRequest(q="x")).k == 30  # the default k (50), cut
    asked = RagRequest(q="x", k=30, top_n=5)
    assert acme.limit_k(asked) is asked


def test_filter_keys_are_allow_listed_and_typed(conf: Settings) -> None:
    p = TenantPolicy.for_tenant(conf, "acme")
    p.check_filters(RagRequest(q="x", filter={"source": "a", "year": [2020, 2021], "public": True}))
    with pytest.raises(InvalidRequest) as bad:
        p.check_filters(RagRequest(q="x", filter={"zeta": "a", "alpha": 1}))
    assert bad.value.message == "filter keys not allowed: alpha, zeta (allowed: public, source, year)"
    with pytest.raises(InvalidRequest, match="filter key 'year' takes integer values"):
        p.check_filters(RagRequest(q="x", filter={"year": "2020"}))
    with pytest.raises(InvalidRequest, match="filter key 'year' takes integer values"):
        p.check_filters(RagRequest(q="x", filter={"year": True}))  # a bool is not an integer
