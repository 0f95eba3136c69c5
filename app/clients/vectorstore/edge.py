"""EdgeStore: Qdrant's own engine in-process (`qdrant-edge-py`) on a local directory."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    HnswIndexConfig,
    Point,
    Query,
    QueryBatchRequest,
    QueryRequest,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)

from app.clients.vectorstore.base import QdrantStore, Vectors
from app.clients.vectorstore.edge_terms import edge_filter, index_params, type_name
from app.clients.vectorstore.errors import EDGE_ERRORS, translated
from app.clients.vectorstore.layout import read_embedder, record_embedder, serving_dir
from app.clients.vectorstore.payload_cache import PayloadCache
from app.clients.vectorstore.shared import (
    DEPENDENCY,
    Condition,
    collection_info,
    index_entry,
    payload_indexes,
)
from app.errors import DependencyUnavailable
from app.settings import QdrantSettings
from app.types import Candidate, PointIn

# the engine's record of its configuration; see EdgeStore._stored_config for why it is read
CONFIG_FILE = "edge_config.json"


class EdgeStore(QdrantStore):
    """qdrant-edge shard on `path/collection`. Calls run on one dedicated thread, in order.
    One process owns the directory: run one worker."""

    def __init__(self, settings: QdrantSettings, directory: Path | None = None) -> None:
        super().__init__(settings)
        # the serving shard (see layout.py: a restore makes another directory the serving one)
        self.path = directory if directory is not None else serving_dir(settings.path, settings.collection)
        self._shard: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._payloads = PayloadCache(settings.payload_cache_mb * 2**20)
        if (self.path / CONFIG_FILE).exists():
            # HNSW m and ef_construct stay the shard's own (set at creation or by a reindex)
            hnsw = self._stored_config().get("hnsw_config") or {}
            keep = {f"hnsw_{k}": hnsw[k] for k in ("m", "ef_construct") if isinstance(hnsw.get(k), int)}
            self._s = settings.model_copy(update=keep)
            dim = self._stored_dim_now()
            # loading with our config applies a changed full_scan_threshold; the next optimize()
            # rebuilds the segments that were built with the old one
            path = str(self.path)
            self._shard = EdgeShard.load(path, self._config(dim)) if dim is not None else EdgeShard.load(path)

    @classmethod
    def from_settings(cls, s: QdrantSettings) -> EdgeStore:
        return cls(s)

    def _config(self, dim: int) -> EdgeConfig:
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
            # by default the engine spreads a search over its own pool (eight threads on 2 cores);
            # searches here run one at a time on the store's thread, so extra threads only add
            # hand-offs (docs/ARCHITECTURE.md, "Payload cache")
            max_search_threads=self._s.search_threads or None,
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        with translated(EDGE_ERRORS):
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _shard_or_raise(self) -> Any:
        if self._shard is None:
            raise DependencyUnavailable(
                DEPENDENCY, f"collection {self.collection!r} does not exist at {self.path}; bootstrap it"
            )
        return self._shard

    def _stored_config(self) -> dict[str, Any]:
        """The configuration the engine keeps for the shard. qdrant-edge 0.9.0 has no call that
        reports it (ShardInfo carries counts and the payload schema only), so it is read from the
        engine's own file; {} when that cannot be read."""
        try:
            config = json.loads((self.path / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    def _vector_params(self) -> dict[str, Any]:
        vectors = self._stored_config().get("vectors") or {}
        params = next(iter(vectors.values()), None) if isinstance(vectors, dict) else None
        return params if isinstance(params, dict) else {}

    def _stored_dim_now(self) -> int | None:
        size = self._vector_params().get("size")
        return size if isinstance(size, int) else None

    # --- primitives -----------------------------------------------------------------------

    async def _exists(self) -> bool:
        return bool(await self._run(self._answers))

    def _answers(self) -> bool:
        if self._shard is None:
            return False
        self._shard.info()  # the engine answers
        return True

    async def _stored_dim(self) -> int | None:
        dim: int | None = await self._run(self._stored_dim_now)
        return dim

    async def _stored_embedder(self) -> str | None:
        stored: str | None = await self._run(read_embedder, self.path)
        return stored

    async def _record_embedder(self, embedder: str) -> None:
        await self._run(record_embedder, self.path, embedder)

    async def _create(self, dim: int) -> None:
        await self._run(self._create_now, dim)

    def _create_now(self, dim: int) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(str(self.path), self._config(dim))
        self._payloads.clear()
        for name, kind, is_tenant in payload_indexes(self._s):
            shard.update(UpdateOperation.create_field_index(name, index_params(kind, is_tenant)))
        self._shard = shard

    async def _indexed(self) -> dict[str, str]:
        schema = await self._run(lambda: self._shard_or_raise().info().payload_schema)
        return {name: type_name(idx.data_type) for name, idx in schema.items()}

    async def _add_indexes(self, names: list[str]) -> None:
        for name in names:
            await self._run(self._add_index_now, name)

    def _add_index_now(self, name: str) -> None:
        params = index_params(self._s.filter_keys[name])
        self._shard_or_raise().update(UpdateOperation.create_field_index(name, params))

    async def _refresh(self) -> None:
        # rebuilds the segments built without the new indexes or with another full_scan_threshold
        # (whatever opened the shard before); a no-op when nothing is stale
        await self._build_index()

    async def _build_index(self) -> None:
        await self._run(self._optimize_now)

    def _optimize_now(self) -> None:
        shard = self._shard_or_raise()
        shard.optimize()
        shard.flush()

    async def _query(
        self, vectors: Vectors, k: int, ef: int, where: list[Condition], exact: bool, payload: bool
    ) -> list[list[Candidate]]:
        # requests are built on the store's thread too, so that a value the binding cannot
        # convert goes through EDGE_ERRORS like any engine error
        def run() -> list[list[Candidate]]:
            cached = payload and self._payloads.enabled
            flt = edge_filter(where)
            requests = [
                QueryRequest(
                    limit=k,
                    query=Query.Nearest(v.tolist()),
                    filter=flt,
                    params=SearchParams(hnsw_ef=ef, exact=exact),
                    with_payload=payload and not cached,
                )
                for v in vectors
            ]
            shard = self._shard_or_raise()
            found = shard.query_batch(QueryBatchRequest(requests))
            if cached:
                return self._payloads.candidates(found, lambda ids: shard.retrieve(ids, True, False))
            return [[Candidate(str(h.id), float(h.score), h.payload or {}) for h in hits] for hits in found]

        result: list[list[Candidate]] = await self._run(run)
        return result

    async def _count(self, where: list[Condition]) -> int:
        return int(
            await self._run(lambda: self._shard_or_raise().count(CountRequest(filter=edge_filter(where))))
        )

    async def _retrieve(self, ids: list[str], payload: bool) -> dict[str, dict[str, Any]]:
        point_ids: list[Any] = list(ids)
        records = await self._run(lambda: self._shard_or_raise().retrieve(point_ids, payload, False))
        return {str(r.id): dict(r.payload or {}) for r in records}

    # --- the rest of the interface --------------------------------------------------------

    async def drop(self) -> None:
        """Delete the collection and its files."""
        shard, self._shard = self._shard, None
        if shard is not None:
            await self._run(shard.close)
        await self._run(self._payloads.clear)
        await self._run(shutil.rmtree, self.path, True)

    async def upsert(self, points: list[PointIn]) -> None:
        op = UpdateOperation.upsert_points
        await self._run(
            self._write,
            lambda: op([Point(p.id, p.vector.tolist(), p.payload) for p in points]),
            [p.id for p in points],
        )

    async def delete(self, ids: list[str]) -> None:
        point_ids: list[Any] = list(ids)
        await self._run(self._write, lambda: UpdateOperation.delete_points(point_ids), point_ids)

    def _write(self, operation: Any, ids: list[Any]) -> None:
        """One write on the store's thread; the payload cache forgets what it touched (all of
        it when the engine failed part-way) before any later search runs."""
        try:
            self._shard_or_raise().update(operation())
        except BaseException:
            self._payloads.clear()
            raise
        self._payloads.drop(ids)

    async def scroll(self, offset: Any, limit: int, vectors: bool) -> tuple[list[Any], Any]:
        """One page of points (records with id, payload and, if asked, vector) from `offset`
        (None: the first), and the offset of the next page (None: this was the last)."""
        req = ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=vectors)
        records, after = await self._run(lambda: self._shard_or_raise().scroll(req))
        return list(records), after

    async def flush(self) -> None:
        """Everything written so far is in the shard's files (a copy of them then loads it)."""
        await self._run(lambda: self._shard_or_raise().flush())

    async def info(self) -> dict[str, Any]:
        """What the engine reports: points, indexed vectors, segments and the payload schema from
        ShardInfo; vector size, distance and HNSW m/ef_construct from the configuration it
        stores (see _stored_config), None where that cannot be read. `status` is always None:
        the engine has no background optimizer and reports no status (optimize() is where its
        index is built)."""
        return dict(await self._run(self._info_now))

    def _info_now(self) -> dict[str, Any]:
        i = self._shard_or_raise().info()
        schema = {}
        for name, idx in i.payload_schema.items():
            params: dict[str, Any] = {"type": type_name(idx.data_type)}
            is_tenant = getattr(idx.params, "is_tenant", None)
            if is_tenant is not None:
                params["is_tenant"] = is_tenant
            schema[name] = index_entry(params["type"], params, idx.points)
        vectors, hnsw = self._vector_params(), self._stored_config().get("hnsw_config") or {}
        return collection_info(
            status=None,
            points=i.points_count,
            indexed=i.indexed_vectors_count,
            segments=i.segments_count,
            vectors={"size": vectors.get("size"), "distance": vectors.get("distance")},
            hnsw={"m": hnsw.get("m"), "ef_construct": hnsw.get("ef_construct")},
            payload_schema=schema,
        )

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, shard.close)
        self._payloads.clear()
        self._pool.shutdown(wait=True)
