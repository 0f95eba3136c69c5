"""What both backends build the same way, before any library type is involved: the filter of a
search (tenant first), the payload indexes of a collection, the dimension check and the JSON
shape of `info()` (Qdrant's `GET /collections/<name>` result)."""

from __future__ import annotations

from typing import Any

from app.errors import DependencyRejected
from app.settings import FilterKeyType, QdrantSettings
from app.types import Filters, FilterValue

DEPENDENCY = "qdrant"
NEAREST_BATCH = 64  # vectors per batch of a nearest_ids call
TENANT_KEY = "tenant"
EMBEDDER_KEY = "embedder"  # collection metadata: the id of the embedder that made its vectors

# one condition of a filter: a payload key and its value (a match), or a list of values (any)
Condition = tuple[str, FilterValue | list[FilterValue]]


def conditions(tenant: str | None, filters: Filters) -> list[Condition]:
    """The conditions (ANDed) of a search or count: the tenant, when given, then every filter key.
    An empty tenant is a tenant with no points, never "all tenants"."""
    must: list[Condition] = []
    if tenant is not None:
        must.append((TENANT_KEY, tenant))
    for key, values in filters.items():
        must.append((key, values[0] if len(values) == 1 else list(values)))
    return must


def payload_indexes(s: QdrantSettings) -> list[tuple[str, FilterKeyType, bool]]:
    """(key, type, is_tenant) of every payload index a new collection gets: a keyword index on the
    tenant marked is_tenant, then one per allow-listed filter key, typed as configured.

    Why every filter key is indexed: Qdrant plans a filtered search from payload-index
    cardinality, and a selective filter on an unindexed key walks a graph whose filtered part may
    be disconnected (see the package docstring)."""
    return [(TENANT_KEY, "keyword", True), *((k, t, False) for k, t in s.filter_keys.items())]


def check_dim(collection: str, existing: int | None, wanted: int) -> None:
    """An existing collection must hold vectors of the embedder's size; anything else would fail
    later, point by point, with an engine error."""
    if existing is not None and existing != wanted:
        raise DependencyRejected(
            DEPENDENCY,
            f"collection {collection!r} holds {existing}-dim vectors but the embedder makes "
            f"{wanted}-dim ones; recreate it (bootstrap --recreate) or use another collection",
        )


def index_entry(data_type: str, params: dict[str, Any], points: int | None) -> dict[str, Any]:
    """One entry of `payload_schema`, as the server's JSON shows it."""
    return {"data_type": data_type, "params": params, "points": points}


def collection_info(
    *,
    status: str | None,
    points: int | None,
    indexed: int | None,
    segments: int | None,
    vectors: dict[str, Any],
    hnsw: dict[str, Any],
    payload_schema: dict[str, Any],
) -> dict[str, Any]:
    """The shape of Qdrant's `GET /collections/<name>` result; `vectors` holds size and distance,
    `hnsw` m and ef_construct, each as the backend reports them."""
    return {
        "status": status,
        "points_count": points,
        "indexed_vectors_count": indexed,
        "segments_count": segments,
        "config": {"params": {"vectors": vectors}, "hnsw_config": hnsw},
        "payload_schema": payload_schema,
    }
