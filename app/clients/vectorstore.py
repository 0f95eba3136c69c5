"""The vector store: one small interface, two Qdrant backends.

- EdgeStore (default): Qdrant's own engine in-process (`qdrant-edge-py`) on a local directory,
  real HNSW built by `optimize()`. One process owns the directory: run one worker.
- ServerStore: a Qdrant server or cluster by URL through `qdrant-client`'s AsyncQdrantClient.

Both create the collection idempotently with the DESIGN §4 schema (cosine, HNSW m/ef_construct,
keyword index on `tenant` with is_tenant, and a payload index for every allow-listed filter key,
typed as configured) and always filter searches by tenant.

Why every filter key is indexed and full_scan_threshold is Qdrant's default: Qdrant plans a
filtered search from payload-index cardinality. A filter whose points it can count below the
threshold is answered exactly (payload index, then scoring); anything else walks the HNSW graph,
only through points that pass the filter. With the old threshold of 10 KB (6 points at 384 dims)
and no index on `source`/`topic`/`doc_id`, selective filters walked a graph whose filtered part
is disconnected and came back short; and a small tenant's graph rebuilt by `optimize()` after one
upsert was reachable from one point only (measured with qdrant-edge 0.9.0; exact search on the
same shard saw all of them). The pipeline still checks counts and falls back to exact search
(app/search.py): no engine defect may drop passages unseen.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.errors import (
    DependencyBadResponse,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
    InputRejected,
)
from app.settings import FilterKeyType, QdrantSettings
from app.types import Candidate, Filters, PointIn

DEPENDENCY = "qdrant"
log = logging.getLogger("rag.vectorstore")
NEAREST_BATCH = 64


class VectorStore(Protocol):
    collection: str

    async def ensure_collection(self, dim: int) -> bool: ...

    async def drop(self) -> None: ...

    async def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        ef: int,
        tenant: str,
        filters: Filters,
        exact: bool = False,
    ) -> list[Candidate]: ...

    async def ensure_indexes(self) -> list[str]: ...

    async def nearest_ids(
        self, vectors: npt.NDArray[np.float32], k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]: ...

    async def existing(self, ids: list[str]) -> set[str]: ...

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]: ...

    async def upsert(self, points: list[PointIn]) -> None: ...

    async def delete(self, ids: list[str]) -> None: ...

    async def optimize(self) -> None: ...

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int: ...

    async def info(self) -> dict[str, Any]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class EdgeStore:
    """qdrant-edge shard on `path/collection`. Calls run on one dedicated thread, in order."""

    def __init__(self, settings: QdrantSettings) -> None:
        self._s = settings
        self.collection = settings.collection
        self.path = settings.path / settings.collection
        self._shard: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._load_if_present()

    @classmethod
    def from_settings(cls, s: QdrantSettings) -> EdgeStore:
        return cls(s)

    def _load_if_present(self) -> None:
        from qdrant_edge import EdgeShard

        if (self.path / "edge_config.json").exists():
            dim = self._dim()
            # loading with our config applies a changed full_scan_threshold; the next optimize()
            # rebuilds the segments that were built with the old one
            self._shard = (
                EdgeShard.load(str(self.path), self._config(dim))
                if dim is not None
                else EdgeShard.load(str(self.path))
            )

    def _config(self, dim: int) -> Any:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeOptimizersConfig,
            EdgeVectorParams,
            HnswIndexConfig,
        )

        return EdgeConfig(
            vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine),
            hnsw_config=HnswIndexConfig(
                m=self._s.hnsw_m,
                ef_construct=self._s.hnsw_ef_construct,
                full_scan_threshold=self._s.full_scan_threshold_kb,
            ),
            # index every segment, however small: the default threshold would leave a corpus
            # of a few thousand points as a plain scan and never build the HNSW graph
            optimizers=EdgeOptimizersConfig(indexing_threshold=1),
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except (DependencyUnavailable, DependencyBadResponse):
            raise
        except (TypeError, UnicodeError, OverflowError) as exc:
            # the binding could not convert a value (a lone surrogate, an integer out of range):
            # the request's fault, not the engine's; it must not count against the breaker
            raise InputRejected(DEPENDENCY, f"embedded engine refused a value: {exc}") from exc
        except Exception as exc:  # the engine raises plain Exceptions with a message
            raise DependencyBadResponse(DEPENDENCY, f"embedded engine error: {exc}") from exc

    def _shard_or_raise(self) -> Any:
        if self._shard is None:
            raise DependencyUnavailable(
                DEPENDENCY, f"collection {self.collection!r} does not exist at {self.path}; bootstrap it"
            )
        return self._shard

    async def ensure_collection(self, dim: int) -> bool:
        """Create the shard if it does not exist. True if it was created."""
        if self._shard is not None:
            _check_dim(self.collection, self._dim(), dim)
            return False
        return bool(await self._run(self._create, dim))

    async def drop(self) -> None:
        """Delete the collection and its files."""
        import shutil

        shard, self._shard = self._shard, None
        if shard is not None:
            await self._run(shard.close)
        await self._run(shutil.rmtree, self.path, True)

    def _create(self, dim: int) -> bool:
        from qdrant_edge import EdgeShard, KeywordIndexParams, UpdateOperation

        self.path.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(str(self.path), self._config(dim))
        shard.update(UpdateOperation.create_field_index("tenant", KeywordIndexParams(is_tenant=True)))
        for name, kind in self._s.filter_keys.items():
            shard.update(UpdateOperation.create_field_index(name, _edge_index_params(kind)))
        self._shard = shard
        return True

    async def ensure_indexes(self) -> list[str]:
        """Add the payload index of every allow-listed filter key the collection lacks (a
        collection made by an older version); returns the keys indexed now."""
        if self._shard is None:
            return []
        return list(await self._run(self._ensure_indexes))

    def _ensure_indexes(self) -> list[str]:
        from qdrant_edge import UpdateOperation

        shard = self._shard_or_raise()
        have = set(shard.info().payload_schema)
        added = [name for name in self._s.filter_keys if name not in have]
        for name in added:
            kind = self._s.filter_keys[name]
            shard.update(UpdateOperation.create_field_index(name, _edge_index_params(kind)))
        # once per start: rebuilds the segments built without these indexes or with another
        # full_scan_threshold (whatever opened the shard before); a no-op when nothing is stale
        shard.optimize()
        shard.flush()
        return added

    async def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        ef: int,
        tenant: str,
        filters: Filters,
        exact: bool = False,
    ) -> list[Candidate]:
        return list(await self._run(self._search, vector, k, ef, tenant, filters, exact))

    def _search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        ef: int,
        tenant: str,
        filters: Filters,
        exact: bool,
    ) -> list[Candidate]:
        from qdrant_edge import Query, SearchParams, SearchRequest

        shard = self._shard_or_raise()
        hits = shard.search(
            SearchRequest(
                query=Query.Nearest(vector.tolist()),
                limit=k,
                filter=_edge_filter(tenant, filters),
                params=SearchParams(hnsw_ef=ef, exact=exact),
                with_payload=True,
            )
        )
        return [Candidate(str(h.id), float(h.score), h.payload or {}) for h in hits]

    async def nearest_ids(
        self, vectors: npt.NDArray[np.float32], k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        """(id, score) of the top k of each vector under the tenant filter, as one planned batch
        through the index (no payloads): what write verification asks."""
        return list(await self._run(self._nearest_ids, vectors, k, ef, tenant))

    def _nearest_ids(
        self, vectors: npt.NDArray[np.float32], k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        from qdrant_edge import Query, QueryBatchRequest, QueryRequest, SearchParams

        shard = self._shard_or_raise()
        flt = _edge_filter(tenant, {})
        out: list[list[tuple[str, float]]] = []
        for i in range(0, len(vectors), NEAREST_BATCH):
            requests = [
                QueryRequest(
                    limit=k,
                    query=Query.Nearest(v.tolist()),
                    filter=flt,
                    params=SearchParams(hnsw_ef=ef),
                    with_payload=False,
                )
                for v in vectors[i : i + NEAREST_BATCH]
            ]
            for hits in shard.query_batch(QueryBatchRequest(requests)):
                out.append([(str(h.id), float(h.score)) for h in hits])
        return out

    async def existing(self, ids: list[str]) -> set[str]:
        """Which of `ids` are points of the collection now."""
        point_ids: list[Any] = list(ids)
        records = await self._run(lambda: self._shard_or_raise().retrieve(point_ids, False, False))
        return {str(r.id) for r in records}

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The payload of each of `ids` that is a point now."""
        point_ids: list[Any] = list(ids)
        records = await self._run(lambda: self._shard_or_raise().retrieve(point_ids, True, False))
        return {str(r.id): dict(r.payload or {}) for r in records}

    async def upsert(self, points: list[PointIn]) -> None:
        await self._run(self._upsert, points)

    def _upsert(self, points: list[PointIn]) -> None:
        from qdrant_edge import Point, UpdateOperation

        shard = self._shard_or_raise()
        shard.update(
            UpdateOperation.upsert_points([Point(p.id, p.vector.tolist(), p.payload) for p in points])
        )

    async def delete(self, ids: list[str]) -> None:
        from qdrant_edge import UpdateOperation

        point_ids: list[Any] = list(ids)
        await self._run(lambda: self._shard_or_raise().update(UpdateOperation.delete_points(point_ids)))

    async def optimize(self) -> None:
        await self._run(lambda: (self._shard_or_raise().optimize(), self._shard_or_raise().flush()))

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int:
        from qdrant_edge import CountRequest

        flt = _edge_filter(tenant, filters or {})
        return int(await self._run(lambda: self._shard_or_raise().count(CountRequest(filter=flt))))

    async def info(self) -> dict[str, Any]:
        return dict(await self._run(self._info))

    def _info(self) -> dict[str, Any]:
        shard = self._shard_or_raise()
        i = shard.info()
        schema = {}
        for name, idx in i.payload_schema.items():
            params = {"type": str(idx.data_type).rsplit(".", 1)[-1].lower()}
            is_tenant = getattr(idx.params, "is_tenant", None)
            if is_tenant is not None:
                params["is_tenant"] = is_tenant
            schema[name] = {"data_type": params["type"], "params": params, "points": idx.points}
        return _collection_info(
            points=i.points_count,
            indexed=i.indexed_vectors_count,
            segments=i.segments_count,
            dim=self._dim(),
            m=self._s.hnsw_m,
            ef_construct=self._s.hnsw_ef_construct,
            payload_schema=schema,
        )

    def _dim(self) -> int | None:
        import json

        try:
            vectors = json.loads((self.path / "edge_config.json").read_text()).get("vectors", {})
            return int(next(iter(vectors.values()))["size"])
        except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
            return None

    async def ping(self) -> None:
        await self.count()

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, shard.close)
        self._pool.shutdown(wait=True)


def _check_dim(collection: str, existing: int | None, wanted: int) -> None:
    """An existing collection must hold vectors of the embedder's size; anything else would fail
    later, point by point, with an engine error."""
    if existing is not None and existing != wanted:
        raise DependencyRejected(
            DEPENDENCY,
            f"collection {collection!r} holds {existing}-dim vectors but the embedder makes "
            f"{wanted}-dim ones; recreate it (bootstrap --recreate) or use another collection",
        )


def _edge_index_params(kind: FilterKeyType) -> Any:
    from qdrant_edge import BoolIndexParams, IntegerIndexParams, KeywordIndexParams

    if kind == "integer":
        return IntegerIndexParams(lookup=True, range=False)
    if kind == "bool":
        return BoolIndexParams()
    return KeywordIndexParams()


def _server_index_schema(kind: FilterKeyType) -> Any:
    from qdrant_client import models

    if kind == "integer":
        return models.PayloadSchemaType.INTEGER
    if kind == "bool":
        return models.PayloadSchemaType.BOOL
    return models.PayloadSchemaType.KEYWORD


def _edge_filter(tenant: str | None, filters: Filters) -> Any:
    from qdrant_edge import FieldCondition, Filter, MatchAny, MatchValue

    must: list[Any] = []
    if tenant is not None:
        must.append(FieldCondition(key="tenant", match=MatchValue(tenant)))
    for key, values in filters.items():
        if len(values) == 1:
            # qdrant-edge 0.9.0 turns a Python bool into the integer 1 or 0, which matches
            # integers and no boolean; numpy's bool reaches the engine as a boolean
            value = np.bool_(values[0]) if isinstance(values[0], bool) else values[0]
            must.append(FieldCondition(key=key, match=MatchValue(value)))  # type: ignore[arg-type]
        else:
            must.append(FieldCondition(key=key, match=MatchAny(list(values))))  # type: ignore[arg-type]
    return Filter(must=must) if must else None


def _collection_info(
    *,
    status: str = "green",
    points: int | None,
    indexed: int | None,
    segments: int | None,
    dim: int | None,
    m: int,
    ef_construct: int,
    payload_schema: dict[str, Any],
) -> dict[str, Any]:
    """The shape of Qdrant's `GET /collections/<name>` result."""
    return {
        "status": status,
        "points_count": points,
        "indexed_vectors_count": indexed,
        "segments_count": segments,
        "config": {
            "params": {"vectors": {"size": dim, "distance": "Cosine"}},
            "hnsw_config": {"m": m, "ef_construct": ef_construct},
        },
        "payload_schema": payload_schema,
    }


class ServerStore:
    """A Qdrant server (or cluster) through qdrant-client's AsyncQdrantClient."""

    def __init__(self, settings: QdrantSettings, client: Any) -> None:
        self._s = settings
        self.collection = settings.collection
        self._client = client

    @classmethod
    def from_settings(cls, s: QdrantSettings) -> ServerStore:
        from qdrant_client import AsyncQdrantClient

        if s.url == ":memory:":  # qdrant-client's local mode: for tests and demos only
            client = AsyncQdrantClient(location=":memory:")
        else:
            # no version probe at start-up: it is a blocking call that hangs on an unreachable server
            client = AsyncQdrantClient(
                url=s.url, api_key=s.api_key, timeout=max(1, int(s.timeout_s)), check_compatibility=False
            )
        return cls(s, client)

    async def _call(self, coro: Any) -> Any:
        import httpx
        from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return await coro
        except UnexpectedResponse as exc:
            code = exc.status_code
            if code == 404:  # the collection is not there (yet): not bootstrapped, like EdgeStore
                raise DependencyUnavailable(DEPENDENCY, f"collection {self.collection!r} not found") from exc
            if code in (429, 502, 503, 504):
                raise DependencyUnavailable(DEPENDENCY, f"answered {code}") from exc
            if code in (400, 422):  # the server refused a value of the request: the caller's fault
                raise InputRejected(DEPENDENCY, f"answered {code}: {exc.reason_phrase}") from exc
            raise DependencyBadResponse(DEPENDENCY, f"answered {code}: {exc.reason_phrase}") from exc
        except ResourceExhaustedResponse as exc:
            raise DependencyUnavailable(DEPENDENCY, "rate limited (429)") from exc
        except ResponseHandlingException as exc:
            # qdrant-client wraps both transport failures and unparsable answers in this one type
            source = exc.source
            if isinstance(source, httpx.TimeoutException | TimeoutError):
                raise DependencyTimeout(DEPENDENCY, f"timed out: {type(source).__name__}") from exc
            if isinstance(source, httpx.TransportError | OSError):
                raise DependencyUnavailable(DEPENDENCY, f"request failed: {source!r}") from exc
            raise DependencyBadResponse(DEPENDENCY, f"unusable answer: {source!r}") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise DependencyTimeout(DEPENDENCY, "timed out") from exc
        except (OSError, httpx.TransportError) as exc:
            raise DependencyUnavailable(DEPENDENCY, f"connection failed: {exc!r}") from exc
        except UnicodeError as exc:  # a request value the client cannot encode: the caller's fault
            raise InputRejected(DEPENDENCY, f"client could not encode a value: {exc}") from exc
        except ValueError as exc:
            # local mode (":memory:") says a missing collection with a ValueError
            if "not found" in str(exc):
                raise DependencyUnavailable(DEPENDENCY, str(exc)) from exc
            raise DependencyBadResponse(DEPENDENCY, f"client error: {exc}") from exc
        except Exception as exc:  # never let a library exception cross the boundary
            raise DependencyBadResponse(DEPENDENCY, f"{type(exc).__name__}: {exc}") from exc

    async def ensure_collection(self, dim: int) -> bool:
        from qdrant_client import models

        if await self._call(self._client.collection_exists(self.collection)):
            info = await self._call(self._client.get_collection(self.collection))
            _check_dim(self.collection, getattr(info.config.params.vectors, "size", None), dim)
            return False
        await self._call(
            self._client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                hnsw_config=models.HnswConfigDiff(
                    m=self._s.hnsw_m,
                    ef_construct=self._s.hnsw_ef_construct,
                    full_scan_threshold=self._s.full_scan_threshold_kb,
                ),
            )
        )
        await self._call(
            self._client.create_payload_index(
                self.collection,
                "tenant",
                field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                wait=True,
            )
        )
        await self._create_indexes(list(self._s.filter_keys))
        return True

    async def _create_indexes(self, names: list[str]) -> None:
        for name in names:
            await self._call(
                self._client.create_payload_index(
                    self.collection,
                    name,
                    field_schema=_server_index_schema(self._s.filter_keys[name]),
                    wait=True,
                )
            )

    async def ensure_indexes(self) -> list[str]:
        if not await self._call(self._client.collection_exists(self.collection)):
            return []
        info = await self._call(self._client.get_collection(self.collection))
        have = info.payload_schema or {}
        for name, kind in self._s.filter_keys.items():
            got = getattr(getattr(have.get(name), "data_type", None), "value", None)
            if got is not None and got != _server_index_schema(kind).value:
                log.warning(
                    "payload index of another type",
                    extra={"collection": self.collection, "key": name, "index": got, "configured": kind},
                )
        added = [name for name in self._s.filter_keys if name not in have]
        await self._create_indexes(added)
        if info.config.hnsw_config.full_scan_threshold != self._s.full_scan_threshold_kb:
            from qdrant_client import models

            await self._call(
                self._client.update_collection(
                    self.collection,
                    hnsw_config=models.HnswConfigDiff(full_scan_threshold=self._s.full_scan_threshold_kb),
                )
            )
        return added

    async def drop(self) -> None:
        await self._call(self._client.delete_collection(self.collection))

    @staticmethod
    def _filter(tenant: str | None, filters: Filters) -> Any:
        from qdrant_client import models

        must: list[Any] = []
        if tenant is not None:
            must.append(models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)))
        for key, values in filters.items():
            match: Any = (
                models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=list(values))
            )
            must.append(models.FieldCondition(key=key, match=match))
        return models.Filter(must=must) if must else None

    async def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        ef: int,
        tenant: str,
        filters: Filters,
        exact: bool = False,
    ) -> list[Candidate]:
        from qdrant_client import models

        resp = await self._call(
            self._client.query_points(
                self.collection,
                query=vector.tolist(),
                limit=k,
                query_filter=self._filter(tenant, filters),
                search_params=models.SearchParams(hnsw_ef=ef, exact=exact),
                with_payload=True,
            )
        )
        return [Candidate(str(p.id), float(p.score), p.payload or {}) for p in resp.points]

    async def nearest_ids(
        self, vectors: npt.NDArray[np.float32], k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        from qdrant_client import models

        flt = self._filter(tenant, {})
        out: list[list[tuple[str, float]]] = []
        for i in range(0, len(vectors), NEAREST_BATCH):
            requests = [
                models.QueryRequest(
                    query=v.tolist(),
                    limit=k,
                    filter=flt,
                    params=models.SearchParams(hnsw_ef=ef),
                    with_payload=False,
                )
                for v in vectors[i : i + NEAREST_BATCH]
            ]
            resps = await self._call(self._client.query_batch_points(self.collection, requests=requests))
            out.extend([(str(p.id), float(p.score)) for p in r.points] for r in resps)
        return out

    async def existing(self, ids: list[str]) -> set[str]:
        records = await self._call(
            self._client.retrieve(self.collection, ids=list(ids), with_payload=False, with_vectors=False)
        )
        return {str(r.id) for r in records}

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = await self._call(
            self._client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=False)
        )
        return {str(r.id): dict(r.payload or {}) for r in records}

    async def upsert(self, points: list[PointIn]) -> None:
        from qdrant_client import models

        await self._call(
            self._client.upsert(
                self.collection,
                points=[
                    models.PointStruct(id=p.id, vector=p.vector.tolist(), payload=p.payload) for p in points
                ],
                wait=True,
            )
        )

    async def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        await self._call(
            self._client.delete(
                self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )
        )

    async def optimize(self) -> None:
        return None  # the server indexes in the background

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int:
        resp = await self._call(
            self._client.count(self.collection, count_filter=self._filter(tenant, filters or {}), exact=True)
        )
        return int(resp.count)

    async def info(self) -> dict[str, Any]:
        i = await self._call(self._client.get_collection(self.collection))
        vectors = i.config.params.vectors
        dim = getattr(vectors, "size", None)
        schema = {
            name: {
                "data_type": str(v.data_type.value),
                # as the server's JSON shows it: plain strings, unset options left out
                "params": v.params.model_dump(mode="json", exclude_none=True) if v.params else {},
                "points": v.points,
            }
            for name, v in (i.payload_schema or {}).items()
        }
        return _collection_info(
            status=str(getattr(i.status, "value", i.status)),
            points=i.points_count,
            indexed=i.indexed_vectors_count,
            segments=i.segments_count,
            dim=dim,
            m=i.config.hnsw_config.m,
            ef_construct=i.config.hnsw_config.ef_construct,
            payload_schema=schema,
        )

    async def ping(self) -> None:
        if not await self._call(self._client.collection_exists(self.collection)):
            raise DependencyUnavailable(DEPENDENCY, f"collection {self.collection!r} does not exist")

    async def aclose(self) -> None:
        await self._client.close()


def vectorstore_from_settings(s: QdrantSettings) -> VectorStore:
    if s.url:
        return ServerStore.from_settings(s)
    return EdgeStore.from_settings(s)
