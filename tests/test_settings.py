"""Settings from the environment: the RAG_ prefix, `__` nesting, JSON values, validation, and
no reads at import time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from support.proc import run_python

from app.clients.cache import RerankCache
from app.resilience import BreakerConfig, CircuitBreaker
from app.settings import EmbedderSettings, QdrantSettings, RedisSettings, RerankerSettings, Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any RAG_* variable; the test sets the ones it needs."""
    for name in list(os.environ):
        if name.upper().startswith("RAG_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_without_environment(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.qdrant.url is None  # embedded engine
    assert s.qdrant.collection == "rag_docs"
    assert (s.qdrant.hnsw_m, s.qdrant.hnsw_ef_construct) == (32, 200)
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.reranker.kind == "lexical"
    # reciprocal-rank fusion, weight 0.2 on the BM25 rank (README, "Quality")
    assert (s.reranker.fusion, s.reranker.fusion_weight, s.reranker.rrf_k) == ("rrf", 0.2, 60)
    assert s.server.port == 8080


def test_prefix_and_nesting(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_QDRANT__URL", "http://qdrant:6333")
    env.setenv("RAG_QDRANT__COLLECTION", "docs_v2")
    env.setenv("RAG_REDIS__URL", "redis://cache:6379/1")
    env.setenv("RAG_REDIS__TIMEOUT_S", "0.1")
    env.setenv("RAG_RERANKER__KIND", "http")
    env.setenv("RAG_RERANKER__URL", "http://reranker:8080")
    env.setenv("RAG_RERANKER__API", "cohere")
    env.setenv("RAG_SERVER__PORT", "9000")
    env.setenv("RAG_SERVER__DOCS_ENABLED", "false")
    env.setenv("QDRANT__URL", "http://unprefixed:1")  # no prefix: not ours
    s = Settings()
    assert s.qdrant.url == "http://qdrant:6333"
    assert s.qdrant.collection == "docs_v2"
    assert s.redis.url == "redis://cache:6379/1"
    assert s.redis.timeout_s == 0.1
    assert s.reranker.kind == "http"
    assert s.reranker.url == "http://reranker:8080"
    assert s.reranker.api == "cohere"
    assert s.server.port == 9000
    assert s.server.docs_enabled is False


def test_the_next_embedder_is_an_optional_group_of_its_own(env: pytest.MonkeyPatch) -> None:
    assert Settings().reindex.next_embedder is None  # unset: a reembed keeps the model
    env.setenv("RAG_EMBEDDER__MODEL_DIR", "/models/a")
    env.setenv("RAG_REINDEX__NEXT_EMBEDDER__VARIANT", "int8")
    s = Settings()
    nxt = s.reindex.next_embedder
    assert nxt is not None and nxt.variant == "int8"
    # a group of its own: nothing is taken from RAG_EMBEDDER__*, and the serving one is unchanged
    assert nxt.model_dir == EmbedderSettings().model_dir
    assert (s.embedder.variant, s.embedder.model_dir) == ("fp32", Path("/models/a"))
    env.setenv("RAG_REINDEX__NEXT_EMBEDDER__KIND", "http")
    with pytest.raises(ValidationError, match=r"needs embedder\.url"):  # validated like the serving one
        Settings()
    env.setenv("RAG_REINDEX__NEXT_EMBEDDER__URL", "http://tei:80")
    nxt = Settings().reindex.next_embedder
    assert nxt is not None and (nxt.kind, nxt.url) == ("http", "http://tei:80")


def test_json_values(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_QDRANT__TENANT_EF", '{"hot": 16, "big": 256}')
    env.setenv("RAG_QDRANT__FILTER_KEYS", '["topic", "lang"]')
    s = Settings()
    assert s.qdrant.tenant_ef == {"hot": 16, "big": 256}
    assert s.qdrant.filter_keys == {"topic": "keyword", "lang": "keyword"}  # a list: all keyword
    env.setenv("RAG_QDRANT__FILTER_KEYS", '{"topic": "keyword", "year": "integer", "draft": "bool"}')
    assert Settings().qdrant.filter_keys == {"topic": "keyword", "year": "integer", "draft": "bool"}


@pytest.mark.parametrize("keys", ['["tenant"]', '["text"]', '{"a.b": "keyword"}', '{"topic": "float"}'])
def test_filter_keys_refuse_reserved_names_and_unknown_types(env: pytest.MonkeyPatch, keys: str) -> None:
    env.setenv("RAG_QDRANT__FILTER_KEYS", keys)
    with pytest.raises(ValidationError):
        Settings()


def test_empty_redis_url_means_no_cache(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_REDIS__URL", "")
    s = Settings()
    assert s.redis.url is None
    breaker = CircuitBreaker("redis", BreakerConfig())
    assert RerankCache.from_settings(s.redis, breaker) is None


def test_init_arguments_override_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_QDRANT__COLLECTION", "from_env")
    env.setenv("RAG_QDRANT__PATH", "/from/env")
    s = Settings(qdrant={"path": Path("/from/code")})
    assert s.qdrant.path == Path("/from/code")
    assert s.qdrant.collection == "from_env"


def test_environment_is_read_when_called(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_QDRANT__COLLECTION", "first")
    assert Settings().qdrant.collection == "first"
    env.setenv("RAG_QDRANT__COLLECTION", "second")
    assert Settings().qdrant.collection == "second"


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.qdrant = QdrantSettings()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "value", "where"),
    [
        ("RAG_SERVER__PORT", "0", "server.port"),
        ("RAG_SERVER__PORT", "65536", "server.port"),
        ("RAG_SERVER__PORT", "http", "server.port"),
        ("RAG_RERANKER__KIND", "magic", "reranker.kind"),
        ("RAG_RERANKER__KIND", "http", "reranker.kind=http needs reranker.url"),
        ("RAG_RERANKER__KIND", "cross-encoder", "needs reranker.model_dir"),
        ("RAG_EMBEDDER__KIND", "http", "embedder.kind=http needs embedder.url"),
        ("RAG_QDRANT__EF_DEFAULT", "1100", "ef_default must not exceed qdrant.ef_max"),
        ("RAG_QDRANT__HNSW_M", "2", "qdrant.hnsw_m"),
        ("RAG_QDRANT__COLLECTION", "../elsewhere", "qdrant.collection"),
        ("RAG_QDRANT__TENANT_EF", '{"hot": 0}', "qdrant.tenant_ef.hot"),
        ("RAG_QDRANT__TENANT_EF", '{"hot": "fast"}', "qdrant.tenant_ef.hot"),
        ("RAG_REDIS__TIMEOUT_S", "0", "redis.timeout_s"),
        ("RAG_RERANKER__FUSION_WEIGHT", "1.5", "reranker.fusion_weight"),
        ("RAG_RERANKER__FUSION", "borda", "reranker.fusion"),
        ("RAG_RERANKER__RRF_K", "0", "reranker.rrf_k"),
        ("RAG_LOGGING__LEVEL", "LOUD", "logging.level"),
    ],
)
def test_bad_values_are_validation_errors(env: pytest.MonkeyPatch, var: str, value: str, where: str) -> None:
    env.setenv(var, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert where in str(err.value)


def test_unparsable_json_names_the_group(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAG_QDRANT__TENANT_EF", "{hot: 16")
    with pytest.raises(SettingsError, match="qdrant"):
        Settings()


def test_group_rules_hold_when_built_in_code() -> None:
    assert RedisSettings(url="").url is None
    with pytest.raises(ValidationError, match="ef_default"):
        QdrantSettings(ef_default=100, ef_max=50)
    assert QdrantSettings(ef_default=50, ef_max=50).ef_max == 50
    # a lower ef_max set alone (a setting that was valid with the old default ef) caps the default
    assert QdrantSettings(ef_max=256).ef_default == 256
    with pytest.raises(ValidationError):
        RerankerSettings(kind="http", url="")
    assert RerankerSettings(kind="http", url="http://r").url == "http://r"
    assert EmbedderSettings(kind="http", url="http://e").kind == "http"


def run_code(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python("-c", code, timeout=120, **env)


def test_importing_reads_no_settings() -> None:
    """With an invalid variable set, importing the app (and getting a factory) still works;
    only building Settings fails. So nothing reads the environment at import time."""
    bad = {"RAG_SERVER__PORT": "not-a-port", "RAG_QDRANT__EF_DEFAULT": "-1"}
    imported = run_code(
        "import app.settings, app.main, app.lifespan, app.pipeline, app.__main__\n"
        "from app.main import create_app, create_app_from_env\n"
        "print('imported')",
        **bad,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "imported"

    built = run_code("from app.settings import Settings\nSettings()", **bad)
    assert built.returncode != 0
    assert "server.port" in built.stderr
    assert "ValidationError" in built.stderr
