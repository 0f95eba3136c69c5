"""ServerStore: a Qdrant server or cluster by URL through qdrant-client's AsyncQdrantClient."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from app.clients.vectorstore.base import QdrantStore, Vectors
from app.clients.vectorstore.client_errors import CLIENT_ERRORS
from app.clients.vectorstore.errors import translated
from app.clients.vectorstore.shared import (
    EMBEDDER_KEY,
    Condition,
    collection_info,
    index_entry,
    payload_indexes,
)
from app.settings import QdrantSettings
from app.types import Candidate, PointIn


def _filter(where: list[Condition]) -> models.Filter | None:
    must: list[models.Condition] = [
        models.FieldCondition(
            key=key,
            match=models.MatchAny(any=value) if isinstance(value, list) else models.MatchValue(value=value),
        )
        for key, value in where
    ]
    return models.Filter(must=must) if must else None


def _index_schema(kind: str, is_tenant: bool = False) -> Any:
    if is_tenant:
        return models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    return models.PayloadSchemaType(kind)


class ServerStore(QdrantStore):
    """A Qdrant server (or cluster) through qdrant-client's AsyncQdrantClient."""

    def __init__(self, settings: QdrantSettings, client: Any, owns_client: bool = True) -> None:
        super().__init__(settings)
        self._client, self._owns_client = client, owns_client

    def sibling(self, collection: str, m: int | None = None, ef_construct: int | None = None) -> ServerStore:
        """A store of another collection on the same client (closing it leaves the client open)."""
        update: dict[str, Any] = {"collection": collection}
        if m is not None and ef_construct is not None:
            update.update(hnsw_m=m, hnsw_ef_construct=ef_construct)
        return ServerStore(self._s.model_copy(update=update), self._client, owns_client=False)

    @classmethod
    def from_settings(cls, s: QdrantSettings) -> ServerStore:
        if s.url == ":memory:":  # qdrant-client's local mode: for tests and demos only
            client = AsyncQdrantClient(location=":memory:")
        else:
            # no version probe at start-up: it is a blocking call that hangs on an unreachable server
            client = AsyncQdrantClient(
                url=s.url, api_key=s.api_key, timeout=max(1, int(s.timeout_s)), check_compatibility=False
            )
        return cls(s, client)

    async def _call(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """Build and send one request: an exception of either step goes through CLIENT_ERRORS
        (a filter value the client's models refuse is the caller's fault, like a 400)."""
        with translated(CLIENT_ERRORS):
            return await request()

    # --- primitives -----------------------------------------------------------------------

    async def _exists(self) -> bool:
        return bool(await self._call(lambda: self._client.collection_exists(self.collection)))

    async def _stored_dim(self) -> int | None:
        info = await self._call(lambda: self._client.get_collection(self.collection))
        return getattr(info.config.params.vectors, "size", None)

    async def _stored_embedder(self) -> str | None:
        info = await self._call(lambda: self._client.get_collection(self.collection))
        stored = (info.config.metadata or {}).get(EMBEDDER_KEY)
        return stored if isinstance(stored, str) else None

    async def _record_embedder(self, embedder: str) -> None:
        meta = {EMBEDDER_KEY: embedder}
        await self._call(lambda: self._client.update_collection(self.collection, metadata=meta))

    async def _create(self, dim: int) -> None:
        await self._call(
            lambda: self._client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                hnsw_config=models.HnswConfigDiff(
                    m=self._s.hnsw_m,
                    ef_construct=self._s.hnsw_ef_construct,
                    full_scan_threshold=self._s.full_scan_threshold_kb,
                ),
            )
        )
        for name, kind, is_tenant in payload_indexes(self._s):
            await self._index(name, _index_schema(kind, is_tenant))

    async def _index(self, name: str, schema: Any) -> None:
        await self._call(
            lambda: self._client.create_payload_index(self.collection, name, field_schema=schema, wait=True)
        )

    async def _indexed(self) -> dict[str, str]:
        info = await self._call(lambda: self._client.get_collection(self.collection))
        return {name: str(v.data_type.value) for name, v in (info.payload_schema or {}).items()}

    async def _add_indexes(self, names: list[str]) -> None:
        for name in names:
            await self._index(name, _index_schema(self._s.filter_keys[name]))

    async def _refresh(self) -> None:
        info = await self._call(lambda: self._client.get_collection(self.collection))
        if info.config.hnsw_config.full_scan_threshold != self._s.full_scan_threshold_kb:
            hnsw = models.HnswConfigDiff(full_scan_threshold=self._s.full_scan_threshold_kb)
            await self._call(lambda: self._client.update_collection(self.collection, hnsw_config=hnsw))

    async def _build_index(self) -> None:
        return None  # writes wait until applied; the server indexes them in the background

    async def _query(
        self, vectors: Vectors, k: int, ef: int, where: list[Condition], exact: bool, payload: bool
    ) -> list[list[Candidate]]:
        def requests() -> list[models.QueryRequest]:
            flt, params = _filter(where), models.SearchParams(hnsw_ef=ef, exact=exact)
            return [
                models.QueryRequest(
                    query=v.tolist(), limit=k, filter=flt, params=params, with_payload=payload
                )
                for v in vectors
            ]

        found = await self._call(
            lambda: self._client.query_batch_points(self.collection, requests=requests())
        )
        return [[Candidate(str(p.id), float(p.score), p.payload or {}) for p in r.points] for r in found]

    async def _count(self, where: list[Condition]) -> int:
        resp = await self._call(
            lambda: self._client.count(self.collection, count_filter=_filter(where), exact=True)
        )
        return int(resp.count)

    async def _retrieve(self, ids: list[str], payload: bool) -> dict[str, dict[str, Any]]:
        records = await self._call(
            lambda: self._client.retrieve(
                self.collection, ids=list(ids), with_payload=payload, with_vectors=False
            )
        )
        return {str(r.id): dict(r.payload or {}) for r in records}

    # --- the rest of the interface --------------------------------------------------------

    async def drop(self) -> None:
        await self._call(lambda: self._client.delete_collection(self.collection))

    async def upsert(self, points: list[PointIn]) -> None:
        await self._call(
            lambda: self._client.upsert(
                self.collection,
                points=[
                    models.PointStruct(id=p.id, vector=p.vector.tolist(), payload=p.payload) for p in points
                ],
                wait=True,
            )
        )

    async def delete(self, ids: list[str]) -> None:
        await self._call(
            lambda: self._client.delete(
                self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )
        )

    async def info(self) -> dict[str, Any]:
        """What the server reports for the collection (GET /collections/<name>)."""
        i = await self._call(lambda: self._client.get_collection(self.collection))
        vectors = i.config.params.vectors
        schema = {
            # as the server's JSON shows it: plain strings, unset options left out
            name: index_entry(
                str(v.data_type.value),
                v.params.model_dump(mode="json", exclude_none=True) if v.params else {},
                v.points,
            )
            for name, v in (i.payload_schema or {}).items()
        }
        distance = getattr(vectors, "distance", None)
        return collection_info(
            status=str(getattr(i.status, "value", i.status)),
            points=i.points_count,
            indexed=i.indexed_vectors_count,
            segments=i.segments_count,
            vectors={
                "size": getattr(vectors, "size", None),
                "distance": getattr(distance, "value", distance),
            },
            hnsw={"m": i.config.hnsw_config.m, "ef_construct": i.config.hnsw_config.ef_construct},
            payload_schema=schema,
        )

    # --- snapshots (the server's own API; see app/snapshots/remote.py) ---------------------

    async def create_snapshot(self) -> Any:
        return await self._call(lambda: self._client.create_snapshot(self.collection, wait=True))

    async def list_snapshots(self) -> list[Any]:
        return list(await self._call(lambda: self._client.list_snapshots(self.collection)))

    async def delete_snapshot(self, name: str) -> None:
        await self._call(lambda: self._client.delete_snapshot(self.collection, name, wait=True))

    async def recover_snapshot(self, name: str, checksum: str | None) -> None:
        """Recover the collection from one of its own snapshots, by the server's URL of it; the
        server checks `checksum` before it replaces anything."""
        location = f"{self._s.url}/collections/{self.collection}/snapshots/{name}"
        await self._call(
            lambda: self._client.recover_snapshot(
                self.collection, location, api_key=self._s.api_key, checksum=checksum, wait=True
            )
        )

    # --- reindex (app/reindex/server.py) --------------------------------------------------

    async def scroll(self, offset: Any, limit: int, vectors: bool) -> tuple[list[Any], Any]:
        """One page of points (id, payload, vector if asked) from `offset`, and the next offset."""
        records, after = await self._call(
            lambda: self._client.scroll(
                self.collection, limit=limit, offset=offset, with_payload=True, with_vectors=vectors
            )
        )
        return list(records), after

    async def recorded_embedder(self) -> str | None:
        return await self._stored_embedder()

    async def aliases(self) -> dict[str, str]:
        """Alias -> collection, every alias of the server."""
        found = await self._call(lambda: self._client.get_aliases())
        return {a.alias_name: a.collection_name for a in found.aliases}

    async def set_aliases(self, aliases: dict[str, str]) -> None:
        """Point each alias at its collection, all in one request (the server applies it at once)."""
        have, ops = await self.aliases(), list[Any]()
        for alias, target in aliases.items():
            if alias in have:
                ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            ops.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
                )
            )
        await self._call(lambda: self._client.update_collection_aliases(change_aliases_operations=ops))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()
