"""The app against its own OpenAPI schema (schemathesis, in-process over ASGI, auth on): no 5xx,
responses conform to the schema, negative (schema-violating) data is rejected, and auth is not
ignored (requests without or with a broken key get 401)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance
from support.keys import make_key
from tenancy_support import auth_settings, corpus, ingest, serve

ADMIN = make_key("admin-st", "default", admin=True)


@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: Any, value: Any) -> bytes:
    """A JSON Lines upload: one line per generated item."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


MAX_EXAMPLES = 15
# POST /documents embeds what it gets: fewer examples keep the run short
EXAMPLES = {
    ("POST", "/documents", GenerationMode.POSITIVE): 6,
    ("POST", "/documents", GenerationMode.NEGATIVE): 10,
    # each one packs the collection: a few show the answer's shape
    ("POST", "/admin/snapshots", GenerationMode.POSITIVE): 3,
}


async def _prepare(settings_: Any) -> None:
    """A small collection to query and delete from (the app under test opens it afterwards)."""
    async with serve(settings_) as (client, _):
        await ingest(client, ADMIN, "default", corpus(10))


@pytest.fixture(scope="module")
def api_app(model_dir: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from app.main import create_app

    if redis_server.proc is None:
        redis_server.start()
    settings_ = auth_settings(
        model_dir,
        tmp_path_factory.mktemp("st") / "qdrant",
        redis_server.url,
        [ADMIN],
        auth={"rate_limit": 1_000_000},
    )
    asyncio.run(_prepare(settings_))
    yield create_app(settings_)
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(api_app: Any) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
    )
    return schema


# (method, path, has inputs): negative data needs something to break
OPERATIONS = [
    ("POST", "/rag", True),
    ("POST", "/documents", True),
    ("DELETE", "/documents/{doc_id}", True),
    ("GET", "/livez", False),
    ("GET", "/readyz", False),
    ("GET", "/metrics", False),
    # its body is checked line by line as the job runs (bad lines are reported, not refused):
    # there is no request the upload itself rejects for its content, so no negative data
    ("POST", "/jobs/ingest", False),
    ("GET", "/jobs", False),
    ("GET", "/jobs/{job_id}", True),
    ("DELETE", "/jobs/{job_id}", True),
    ("POST", "/jobs/reindex", True),
    ("GET", "/admin/collection", False),
    ("POST", "/admin/snapshots", False),
    ("GET", "/admin/snapshots", False),
    ("DELETE", "/admin/snapshots/{name}", True),
    ("POST", "/admin/snapshots/{name}/restore", True),
]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_inputs in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_inputs or mode is GenerationMode.POSITIVE
]


def test_the_schema_lists_these_operations(api_schema: Any) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == {(m, p) for m, p, _ in OPERATIONS}


def _top_n_within_k(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("top_n") is None:
        return True
    return bool(body["top_n"] <= body.get("k", 50))


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_conforms_to_its_schema(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]
    # Prometheus' text format is not declared by the /metrics route (OpenAPI says JSON)
    excluded = [content_type_conformance] if path == "/metrics" else []

    strategy = operation.as_strategy(generation_mode=mode)
    if path == "/rag" and mode is GenerationMode.POSITIVE:
        # top_n <= k ties two fields together, which JSON Schema cannot say; the API answers 422
        strategy = strategy.filter(lambda case: _top_n_within_k(case.body))

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES.get((method, path, mode), MAX_EXAMPLES),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=ADMIN.headers, excluded_checks=excluded)

    check()
