"""Settings: every knob of the gateway, validated, read from `RAG_*` environment variables.

Nested groups map to `RAG_<GROUP>__<FIELD>` (pydantic-settings, `__` as the delimiter), e.g.
`RAG_QDRANT__URL`, `RAG_REDIS__URL`, `RAG_RERANKER__KIND`. Nothing is read at import time:
`Settings()` reads the environment when called, and the app factory takes a Settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    deadline_s: float = Field(2.0, gt=0, le=60, description="total deadline of one /rag request")
    max_in_flight: int = Field(64, ge=1, description="in-flight /rag cap per process; excess gets 503")
    max_body_bytes: int = Field(16 * 1024, ge=256, description="request body limit; larger gets 413")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers")
    docs_enabled: bool = True
    default_tenant: str = Field("default", min_length=1, max_length=64)


class EmbedderSettings(BaseModel):
    kind: Literal["onnx", "http"] = "onnx"
    model_dir: Path = Path("data/models/all-MiniLM-L6-v2")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 lets onnxruntime pick")
    cache_size: int = Field(4096, ge=0, description="query-embedding LRU entries; 0 disables it")
    url: str | None = Field(None, description="base URL of a remote embedding service (kind=http)")
    api: Literal["tei", "openai"] = "tei"
    model: str = Field("all-MiniLM-L6-v2", description="model name sent to an OpenAI-style API")
    timeout_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _url_for_http(self) -> EmbedderSettings:
        if self.kind == "http" and not self.url:
            raise ValueError("embedder.kind=http needs embedder.url")
        return self


class QdrantSettings(BaseModel):
    url: str | None = Field(None, description="Qdrant server URL; unset = embedded engine on `path`")
    api_key: str | None = None
    path: Path = Path("data/qdrant")
    collection: str = Field("rag_docs", pattern=r"^[A-Za-z0-9_\-]{1,128}$")
    timeout_s: float = Field(2.0, gt=0)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construct: int = Field(200, ge=8, le=2048)
    ef_default: int = Field(64, ge=1)
    ef_max: int = Field(512, ge=1)
    tenant_ef: dict[str, int] = Field(default_factory=dict, description="per-tenant hnsw_ef policy")
    filter_keys: list[str] = Field(
        default_factory=lambda: ["source", "doc_id", "topic", "lang"],
        description="payload keys a request `filter` may use",
    )

    @model_validator(mode="after")
    def _ef_bounds(self) -> QdrantSettings:
        if self.ef_default > self.ef_max:
            raise ValueError("qdrant.ef_default must not exceed qdrant.ef_max")
        return self


class RedisSettings(BaseModel):
    url: str | None = Field("redis://127.0.0.1:6379/0", description="unset or empty = no cache")
    timeout_s: float = Field(0.05, gt=0, description="bound on one cache operation")
    connect_timeout_s: float = Field(0.2, gt=0)
    ttl_s: int = Field(86400, ge=1)
    max_connections: int = Field(64, ge=1)

    @field_validator("url")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class RerankerSettings(BaseModel):
    kind: Literal["lexical", "cross-encoder", "http", "none"] = "lexical"
    url: str | None = Field(None, description="base URL of the http reranker")
    api: Literal["tei", "cohere"] = "tei"
    model: str = Field("rerank", description="model name sent to a Cohere-style API")
    model_dir: Path | None = Field(None, description="cross-encoder model directory")
    timeout_s: float = Field(1.0, gt=0, description="bound on one reranker attempt")
    concurrency: int = Field(2, ge=1, description="CPU-bound reranks running at once")
    max_length: int = Field(256, ge=8, le=4096, description="cross-encoder token limit per pair")
    fusion_weight: float = Field(
        0.2, ge=0, le=1, description="lexical: weight of BM25 against the vector score"
    )
    bm25_k1: float = Field(0.9, ge=0)
    bm25_b: float = Field(0.4, ge=0, le=1)

    @model_validator(mode="after")
    def _needs(self) -> RerankerSettings:
        if self.kind == "http" and not self.url:
            raise ValueError("reranker.kind=http needs reranker.url")
        if self.kind == "cross-encoder" and self.model_dir is None:
            raise ValueError("reranker.kind=cross-encoder needs reranker.model_dir")
        return self


class ResilienceSettings(BaseModel):
    retry_attempts: int = Field(2, ge=0, le=10, description="retries after the first attempt")
    retry_base_s: float = Field(0.02, ge=0)
    retry_cap_s: float = Field(0.2, ge=0)
    retry_budget_ratio: float = Field(0.2, ge=0, le=1, description="retries per call allowed")
    retry_budget_floor: int = Field(10, ge=0, description="retries always allowed per window")
    breaker_window: int = Field(20, ge=1, description="calls in the sliding window")
    breaker_min_calls: int = Field(10, ge=1)
    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_open_s: float = Field(5.0, gt=0, description="time OPEN before HALF_OPEN")
    breaker_half_open_permits: int = Field(2, ge=1)


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_query: bool = Field(False, description="include query text in request logs")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    server: ServerSettings = ServerSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    qdrant: QdrantSettings = QdrantSettings()
    redis: RedisSettings = RedisSettings()
    reranker: RerankerSettings = RerankerSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    logging: LoggingSettings = LoggingSettings()
