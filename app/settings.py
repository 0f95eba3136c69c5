"""Settings: every knob of the gateway, validated, read from `RAG_*` environment variables.

Nested groups map to `RAG_<GROUP>__<FIELD>` (pydantic-settings, `__` as the delimiter), e.g.
`RAG_QDRANT__URL`, `RAG_REDIS__URL`, `RAG_RERANKER__KIND`. Nothing is read at import time:
`Settings()` reads the environment when called, and the app factory takes a Settings object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings_auth import TENANT_PATTERN, ApiKeySettings, AuthSettings, TenantPolicy
from app.settings_jobs import AnswerCacheSettings, JobsSettings, SnapshotSettings

__all__ = [
    "TENANT_PATTERN",
    "AnswerCacheSettings",
    "ApiKeySettings",
    "AuthSettings",
    "JobsSettings",
    "Settings",
    "SnapshotSettings",
    "TenantPolicy",
]


class ServerSettings(BaseModel):
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(8080, ge=1, le=65535, description="listen port (`make run` uses $PORT)")
    deadline_s: float = Field(2.0, gt=0, le=60, description="total deadline of one /rag request")
    max_in_flight: int = Field(64, ge=1, description="in-flight /rag cap per process; excess gets 503")
    max_body_bytes: int = Field(16 * 1024, ge=256, description="request body limit; larger gets 413")
    max_documents_body_bytes: int = Field(
        4 * 1024 * 1024, ge=256, description="body limit of POST /documents (ingestion); larger gets 413"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="time to send the request line and headers; then 408, closed"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="request line and headers limit; larger gets 431"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="time to send the whole request body; then 408, connection closed"
    )
    readyz_detail: bool = Field(
        False, description="/readyz names why a dependency fails (addresses, errors); off: only which one"
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers")
    docs_enabled: bool = Field(True, description="serve /docs and /openapi.json")
    gc_threshold: int = Field(
        7000,
        ge=0,
        description="objects the young GC generation may gain before a collection (Python's is 700); 0 = "
        "leave Python's",
    )
    default_tenant: str = Field(
        "default",
        min_length=1,
        max_length=64,
        description="tenant of unauthenticated callers and of bootstrap",
    )


VARIANT_DOC = "ONNX weights: `fp32`, or `int8` (less CPU per query; the collection must be re-embedded)"


REMOTE_ID_DOC = (
    "kind=http: the embedder id a collection records (unset = `http:<api>:<model>`); set it to"
    " the ONNX model's id only if the service serves those very weights"
)


class EmbedderSettings(BaseModel):
    kind: Literal["onnx", "http"] = Field(
        "onnx", description="`onnx` in-process model or `http` remote service"
    )
    model_dir: Path = Field(Path("data/models/all-MiniLM-L6-v2"), description="exported ONNX model directory")
    variant: Literal["fp32", "int8"] = Field("fp32", description=VARIANT_DOC)
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 lets onnxruntime pick")
    cache_size: int = Field(4096, ge=0, description="query-embedding LRU entries; 0 disables it")
    url: str | None = Field(None, description="base URL of a remote embedding service (kind=http)")
    api: Literal["tei", "openai"] = Field(
        "tei", description="remote API: TEI `/embed` or OpenAI `/v1/embeddings`"
    )
    model: str = Field("all-MiniLM-L6-v2", description="model name sent to an OpenAI-style API")
    id: str | None = Field(None, description=REMOTE_ID_DOC)
    timeout_s: float = Field(2.0, gt=0, description="bound on one embedder attempt")
    ingest_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="share of the model's time ingestion takes while queries wait (1 = no lane)",
    )

    @model_validator(mode="after")
    def _url_for_http(self) -> EmbedderSettings:
        if self.kind == "http" and not self.url:
            raise ValueError("embedder.kind=http needs embedder.url")
        return self


FilterKeyType = Literal["keyword", "integer", "bool"]
FILTER_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# set by the gateway itself: `tenant` is always filtered from the API key, the rest are not filters
RESERVED_FILTER_KEYS = frozenset({"tenant", "text", "content_hash"})


def _default_filter_keys() -> dict[str, FilterKeyType]:
    return {"source": "keyword", "doc_id": "keyword", "topic": "keyword", "lang": "keyword"}


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(
        0,
        ge=0,
        le=8192,
        description="tokens per chunk; 0 = the model's max_length (256 for a remote embedder)",
    )
    overlap: int = Field(32, ge=0, description="tokens shared by consecutive chunks of a document")


class ReindexSettings(BaseModel):
    keep: int = Field(1, ge=0, le=1, description="shards a reindex replaced kept for a rollback (0 or 1)")
    batch: int = Field(256, ge=1, le=4096, description="points per page a reindex copies (or re-embeds)")
    verify_samples: int = Field(32, ge=1, le=1000, description="stored points searched to verify a reindex")
    next_embedder: EmbedderSettings | None = Field(
        None,
        description="the embedder a `reembed` job moves the collection to (a model change): any"
        " `RAG_EMBEDDER__*` field as `RAG_REINDEX__NEXT_EMBEDDER__*`; unset = re-embed with the same one",
    )
    follow_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Qdrant server: how often a replica reads the alias to follow a model switch another"
        " replica made (0 = never)",
    )
    shared_fence: bool = Field(
        True,
        description="Qdrant server and Redis: a reindex, rollback or snapshot restore holds the writes of"
        " every replica (in Redis), not only its own; writes then answer 503 while Redis is out of reach",
    )


class QdrantSettings(BaseModel):
    url: str | None = Field(None, description="Qdrant server URL; unset = embedded engine on `path`")
    api_key: str | None = Field(None, description="Qdrant server API key (use a Secret)")
    path: Path = Field(Path("data/qdrant"), description="embedded engine data directory (`$DATA_DIR/qdrant`)")
    collection: str = Field("rag_docs", pattern=r"^[A-Za-z0-9_\-]{1,128}$", description="collection name")
    timeout_s: float = Field(2.0, gt=0, description="bound on one search attempt")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW edges per node (collection creation)")
    hnsw_ef_construct: int = Field(200, ge=8, le=2048, description="HNSW build beam (collection creation)")
    ef_default: int = Field(
        512, ge=1, description="search-time hnsw_ef when no tenant policy applies (recall@10 >= 0.98 at 100k)"
    )
    ef_max: int = Field(1024, ge=1, description="upper clamp of every hnsw_ef, the default one too")
    tenant_ef: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="per-tenant hnsw_ef policy"
    )
    filter_keys: dict[str, FilterKeyType] = Field(
        default_factory=_default_filter_keys,
        description="payload keys a request `filter` may use, each with its payload-index type "
        '(`keyword`, `integer` or `bool`): `{"source": "keyword", "year": "integer"}`; a JSON list '
        "of names means all `keyword`. Every key gets a payload index",
    )
    full_scan_threshold_kb: int = Field(
        10_000,
        ge=10,
        description="Qdrant's full_scan_threshold (KB of vectors): a filter matching fewer points "
        "is answered by an exact scan through the payload index instead of graph traversal; applied "
        "to the collection at creation and at start-up (both backends)",
    )

    search_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="embedded engine only: threads one search spreads over the collection's segments "
        "(0 = the engine's own pool: eight threads on a 2-core machine). Searches run one at a time, "
        "so one thread spends the least CPU per search (about half, measured on 2 cores)",
    )

    payload_cache_mb: int = Field(
        64,
        ge=0,
        le=65_536,
        description="embedded engine only: MiB of passage payloads kept in process (LRU), so a "
        "search reads from the engine only the payloads it does not hold; exact, since every write "
        "goes through this process (0 = off)",
    )

    @field_validator("filter_keys", mode="before")
    @classmethod
    def _keys_as_list(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return dict.fromkeys(v, "keyword")
        return v

    @field_validator("filter_keys")
    @classmethod
    def _key_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if name in RESERVED_FILTER_KEYS or not FILTER_KEY_RE.match(name):
                raise ValueError(f"filter key {name!r} is reserved or not a plain payload key")
        return v

    @model_validator(mode="after")
    def _ef_bounds(self) -> QdrantSettings:
        if self.ef_default > self.ef_max:
            if "ef_default" in self.model_fields_set:
                raise ValueError("qdrant.ef_default must not exceed qdrant.ef_max")
            self.ef_default = self.ef_max  # a lower ef_max set alone caps the default too
        return self


class RedisSettings(BaseModel):
    url: str | None = Field("redis://127.0.0.1:6379/0", description="unset or empty = no cache")
    timeout_s: float = Field(
        0.1, gt=0, description="bound on one cache operation (event-loop lag under load counts too)"
    )
    connect_timeout_s: float = Field(0.2, gt=0, description="bound on opening a connection")
    ttl_s: int = Field(86400, ge=1, description="lifetime of a cached rerank result")
    max_connections: int = Field(64, ge=1, description="connection pool size")
    # one breaker for every Redis operation (cache and rate limiter): quick to open and to retry,
    # since both have a cheap fallback and a down Redis must not cost a timeout per request
    breaker_window: int = Field(10, ge=1, description="Redis breaker: calls in its sliding window")
    breaker_min_calls: int = Field(3, ge=1, description="Redis breaker: calls before it may open")
    breaker_failure_rate: float = Field(
        0.5, gt=0, le=1, description="Redis breaker: failure share that opens it"
    )
    breaker_open_s: float = Field(1.0, gt=0, description="Redis breaker: seconds open before one trial")

    @field_validator("url")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class RerankerSettings(BaseModel):
    kind: Literal["lexical", "cross-encoder", "http", "none"] = Field(
        "lexical", description="`lexical` (BM25 fused with vector score), `cross-encoder`, `http` or `none`"
    )
    url: str | None = Field(None, description="base URL of the http reranker")
    api: Literal["tei", "cohere"] = Field(
        "tei", description="http reranker API: TEI `/rerank` or Cohere `/v1/rerank`"
    )
    model: str = Field("rerank", description="model name sent to a Cohere-style API")
    model_dir: Path | None = Field(None, description="cross-encoder model directory")
    timeout_s: float = Field(1.0, gt=0, description="bound on one reranker attempt")
    concurrency: int = Field(2, ge=1, description="CPU-bound reranks running at once")
    max_length: int = Field(256, ge=8, le=4096, description="cross-encoder token limit per pair")
    fusion: Literal["rrf", "minmax"] = Field(
        "rrf",
        description="lexical: `rrf` (reciprocal-rank fusion) or `minmax` (min-max normalised scores)",
    )
    fusion_weight: float = Field(
        0.2, ge=0, le=1, description="lexical: weight of BM25 against the vector score (or rank, with rrf)"
    )
    rrf_k: int = Field(60, ge=1, description="lexical rrf: the constant c in 1 / (c + rank)")
    bm25_k1: float = Field(0.9, ge=0, description="lexical: BM25 term-frequency saturation")
    bm25_b: float = Field(0.4, ge=0, le=1, description="lexical: BM25 length normalisation")

    @model_validator(mode="after")
    def _needs(self) -> RerankerSettings:
        if self.kind == "http" and not self.url:
            raise ValueError("reranker.kind=http needs reranker.url")
        if self.kind == "cross-encoder" and self.model_dir is None:
            raise ValueError("reranker.kind=cross-encoder needs reranker.model_dir")
        return self


class ResilienceSettings(BaseModel):
    retry_attempts: int = Field(2, ge=0, le=10, description="retries after the first attempt")
    retry_base_s: float = Field(0.02, ge=0, description="full-jitter base: sleep ~ U(0, min(cap, base*2^n))")
    retry_cap_s: float = Field(0.2, ge=0, description="full-jitter cap")
    retry_budget_ratio: float = Field(0.2, ge=0, le=1, description="retries per call allowed")
    retry_budget_floor: int = Field(10, ge=0, description="retries always allowed per window")
    breaker_window: int = Field(20, ge=1, description="calls in the sliding window")
    breaker_min_calls: int = Field(10, ge=1, description="calls recorded before the breaker may open")
    breaker_failure_rate: float = Field(0.5, gt=0, le=1, description="failure share that opens the breaker")
    breaker_open_s: float = Field(5.0, gt=0, description="time OPEN before HALF_OPEN")
    breaker_half_open_permits: int = Field(2, ge=1, description="trial calls in HALF_OPEN; all must succeed")


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_query: bool = Field(False, description="include query text in request logs")
    flush_interval_s: float = Field(
        0.1,
        ge=0,
        le=5,
        description="access lines are written together at most this long after the first of them "
        "(every other line at once); 0 = a write per line",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    server: ServerSettings = ServerSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    jobs: JobsSettings = JobsSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    reindex: ReindexSettings = ReindexSettings()
    answer_cache: AnswerCacheSettings = AnswerCacheSettings()
    qdrant: QdrantSettings = QdrantSettings()
    redis: RedisSettings = RedisSettings()
    reranker: RerankerSettings = RerankerSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    logging: LoggingSettings = LoggingSettings()
    auth: AuthSettings = AuthSettings()

    @model_validator(mode="after")
    def _shared_queue(self) -> Settings:
        if self.jobs.queue == "redis" and not (self.redis.url and self.qdrant.url):
            raise ValueError(
                "jobs.queue=redis needs redis.url and qdrant.url: replicas share jobs only when they"
                " share a Qdrant server (with the embedded engine each gateway runs its own jobs)"
            )
        return self
