"""API keys: Bearer tokens checked against salted hashes in constant time; 401 JSON for every kind
of bad key; admin-only ingestion; keys never in logs; the hashing script; open mode."""

from __future__ import annotations

import hmac
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support.keys import Key, make_key
from tenancy_support import assert_json_error, auth_settings, corpus, ingest, serve

from app.apikeys import KeyHash
from app.observability.logging import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
USER = make_key("user-1", "default")
ADMIN = make_key("admin-1", "default", admin=True)
REVOKED = make_key("old-1", "default", revoked=True)
SPY = make_key("spy-1", "default")
SPY_DENIED = make_key("spy-2", "default")
LOGGED = make_key("logged-1", "default")
KEYS = [USER, ADMIN, REVOKED, SPY, SPY_DENIED, LOGGED]
QUERY = {"q": "how do I keep a sourdough starter alive", "k": 5, "rerank": False}


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth") / "qdrant"


@pytest.fixture(scope="module")
async def gateway(
    model_dir: Path, collection: Path, redis_server: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    if redis_server.proc is None:
        redis_server.start()
    settings = auth_settings(model_dir, collection, redis_server.url, KEYS)
    async with serve(settings) as (client, app):
        await ingest(client, ADMIN, "default", corpus(40))
        yield client, app


@pytest.fixture
def client(gateway: tuple[httpx.AsyncClient, Any]) -> httpx.AsyncClient:
    return gateway[0]


async def test_a_valid_key_is_served_as_its_tenant(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", json=QUERY, headers=USER.headers)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    assert {p["payload"]["tenant"] for p in results} == {"default"}
    assert r.headers["x-ratelimit-limit"] == "600"
    # the scheme name is case-insensitive (RFC 7235)
    r = await client.post("/rag", json=QUERY, headers={"Authorization": f"bearer {USER.token}"})
    assert r.status_code == 200, r.text


def _bad_headers() -> list[tuple[str, dict[str, str]]]:
    secret = USER.token.split(".", 1)[1]
    return [
        ("missing", {}),
        ("empty bearer", {"Authorization": "Bearer "}),
        ("scheme only", {"Authorization": "Bearer"}),
        ("basic scheme", {"Authorization": f"Basic {USER.token}"}),
        ("no scheme", {"Authorization": USER.token}),
        ("no key id", {"Authorization": f"Bearer {secret}"}),
        ("short secret", {"Authorization": "Bearer user-1.abc"}),
        ("unknown key id", {"Authorization": f"Bearer nobody.{secret}"}),
        ("wrong secret", {"Authorization": f"Bearer user-1.{secret[::-1]}"}),
        ("secret of another key", {"Authorization": f"Bearer admin-1.{secret}"}),
        ("revoked", REVOKED.headers),
        ("too long", {"Authorization": f"Bearer user-1.{'a' * 600}"}),
    ]


@pytest.mark.parametrize(("case", "headers"), _bad_headers(), ids=[c for c, _ in _bad_headers()])
async def test_bad_keys_are_401_json(client: httpx.AsyncClient, case: str, headers: dict[str, str]) -> None:
    r = await client.post("/rag", json=QUERY, headers=headers)
    err = assert_json_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert USER.token.split(".", 1)[1] not in r.text
    assert REVOKED.token.split(".", 1)[1] not in r.text
    assert "x-ratelimit-limit" not in r.headers, case
    assert err["message"]


async def test_authentication_comes_before_validation(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", json={"q": "", "k": 10**6})
    assert_json_error(r, 401, "unauthorized")
    r = await client.post("/documents", json={"nonsense": True})
    assert_json_error(r, 401, "unauthorized")
    r = await client.delete("/documents/x", params={"tenant": "!!"})
    assert_json_error(r, 401, "unauthorized")


async def test_documents_need_an_admin_key(client: httpx.AsyncClient) -> None:
    body = {"tenant": "default", "documents": [{"id": "d1", "text": "hello"}]}
    assert_json_error(await client.post("/documents", json=body, headers=USER.headers), 403, "forbidden")
    r = await client.delete("/documents/d1", params={"tenant": "default"}, headers=USER.headers)
    assert_json_error(r, 403, "forbidden")
    r = await client.delete("/documents/never-there", params={"tenant": "default"}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text


async def test_tenant_cannot_be_chosen_by_body_or_header(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", json={**QUERY, "tenant": "other"}, headers=USER.headers)
    assert_json_error(r, 422, "invalid_request")
    r = await client.post("/rag", json={**QUERY, "filter": {"tenant": "other"}}, headers=USER.headers)
    assert_json_error(r, 422, "invalid_request")
    r = await client.post(
        "/rag", json=QUERY, headers={**USER.headers, "X-Tenant": "other", "Tenant": "other"}
    )
    assert r.status_code == 200
    assert {p["payload"]["tenant"] for p in r.json()["results"]} == {"default"}


async def test_hmac_compare_digest_decides(
    gateway: tuple[httpx.AsyncClient, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = gateway
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    configured = next(k for k in app.state.rag.settings.auth.keys if k.id == SPY.id)
    stored = KeyHash.parse(configured.hash)

    r = await client.post("/rag", json=QUERY, headers=SPY.headers)
    assert r.status_code == 200, r.text
    assert calls == [(stored.derive(SPY.token), stored.digest)]

    # a verified key is remembered: no second derivation
    r = await client.post("/rag", json=QUERY, headers=SPY.headers)
    assert r.status_code == 200
    assert len(calls) == 1

    # the comparison is what decides: if it says no, a correct key is refused
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    r = await client.post("/rag", json=QUERY, headers=SPY_DENIED.headers)
    assert_json_error(r, 401, "unauthorized")


async def test_the_key_cache_is_keyed_by_an_hmac_not_the_key(gateway: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = gateway
    assert (await client.post("/rag", json=QUERY, headers=USER.headers)).status_code == 200
    cache = app.state.rag.auth._cache
    assert cache
    for fingerprint in cache:
        assert isinstance(fingerprint, bytes)
        assert len(fingerprint) == 32
        assert USER.token.encode() not in fingerprint


async def test_keys_never_appear_in_logs(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = LOGGED.token.split(".", 1)[1]
    attempts = [
        LOGGED.headers,  # valid
        LOGGED.headers,  # valid, from the cache
        {"Authorization": f"Bearer logged-1.{secret[:-1]}x"},  # wrong secret
        {"Authorization": f"Bearer nobody.{secret}"},  # unknown id
        {"Authorization": f"Bearer {secret}"},  # malformed
        {"Authorization": f"Token {LOGGED.token}"},  # wrong scheme
        REVOKED.headers,
    ]
    statuses = []
    for headers in attempts:
        r = await client.post("/rag", json=QUERY, headers=headers)
        statuses.append(r.status_code)
    r = await client.post("/documents", json={"tenant": "x"}, headers=LOGGED.headers)
    statuses.append(r.status_code)
    assert statuses == [200, 200, 401, 401, 401, 401, 401, 403]

    formatter = JsonFormatter()
    lines = [formatter.format(rec) for rec in caplog.records]
    lines += [repr(rec.__dict__) for rec in caplog.records]
    assert sum(rec.name == "rag.access" for rec in caplog.records) == len(statuses)  # access lines are here
    assert any("auth failed" in line for line in lines)
    for forbidden in (secret, REVOKED.token.split(".", 1)[1], secret[:16]):
        assert not [line for line in lines if forbidden in line]


async def test_open_mode_without_keys_warns_and_serves_the_default_tenant(
    model_dir: Path, collection: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = auth_settings(model_dir, collection.parent / "open", None, [])
    async with serve(settings) as (client, app):
        assert not app.state.rag.auth.enabled
        r = await client.post("/documents", json={"tenant": "t1", "documents": [{"id": "a", "text": "x y"}]})
        assert r.status_code == 200, r.text  # open mode is for local use: everything is allowed
        r = await client.post("/rag", json={"q": "x y", "rerank": False}, headers=USER.headers)
        assert r.status_code == 200
        assert r.json()["results"] == []  # the caller is the default tenant, not t1
        assert "x-ratelimit-limit" not in r.headers
    warnings = [rec for rec in caplog.records if rec.name == "rag.auth" and rec.levelno == logging.WARNING]
    assert warnings and "auth off" in warnings[0].getMessage()


async def test_auth_required_refuses_to_start_without_keys(model_dir: Path, tmp_path: Path) -> None:
    from app.main import create_app

    settings = auth_settings(model_dir, tmp_path / "qdrant", None, [], auth={"required": True})
    with pytest.raises(ValueError, match="no API keys"):
        async with LifespanManager(create_app(settings), startup_timeout=60):
            pass


async def test_keys_file(model_dir: Path, tmp_path: Path) -> None:
    from app.main import create_app

    file_key = make_key("file-1", "default", admin=True)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([file_key.entry()]))
    settings = auth_settings(model_dir, tmp_path / "qdrant", None, [], auth={"keys_file": keys_file})
    body = {"tenant": "t1", "documents": [{"id": "a", "text": "from the keys file"}]}
    async with serve(settings) as (client, _):
        assert_json_error(await client.post("/documents", json=body), 401, "unauthorized")
        r = await client.post("/documents", json=body, headers=file_key.headers)
        assert r.status_code == 200, r.text

    # a configured keys file that cannot be read never means "run open"
    missing = auth_settings(
        model_dir, tmp_path / "qdrant", None, [], auth={"keys_file": tmp_path / "nope.json"}
    )
    with pytest.raises(ValueError, match="keys_file"):
        async with LifespanManager(create_app(missing), startup_timeout=60):
            pass


def _hash_script(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/hash_api_key.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hash_script_generates_a_key_and_prints_only_its_hash_on_stdout() -> None:
    out = _hash_script("--id", "acme-1", "--tenant", "acme", "--admin", "--n", "1024")
    assert out.returncode == 0, out.stderr
    entry = json.loads(out.stdout)
    token = out.stderr.strip().rsplit(" ", 1)[1]
    assert token.startswith("acme-1.")
    assert token not in out.stdout and token.split(".", 1)[1] not in out.stdout
    assert entry["id"] == "acme-1" and entry["tenant"] == "acme" and entry["admin"] is True
    assert KeyHash.parse(entry["hash"]).verify(token)
    assert not KeyHash.parse(entry["hash"]).verify(token + "x")

    # hashing an existing key (from stdin) salts it afresh: another hash, the same key
    again = _hash_script("--id", "acme-1", "--stdin", "--n", "1024", stdin=token + "\n")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert again.stdout.strip() != entry["hash"]
    assert KeyHash.parse(again.stdout.strip()).verify(token)

    bad = _hash_script("--id", "acme-1", "--stdin", stdin="other-1.0123456789abcdefghij\n")
    assert bad.returncode == 2


def test_key_hash_format_is_checked() -> None:
    key: Key = make_key("k", "t")
    parsed = KeyHash.parse(key.entry()["hash"])
    assert str(parsed).startswith("scrypt$1024$8$1$")
    for bad in ("", "scrypt$1$2$3", "bcrypt$1024$8$1$AAAA$BBBB", "scrypt$1000$8$1$c2FsdHNhbHQ$" + "A" * 43):
        with pytest.raises(ValueError, match="key hash"):
            KeyHash.parse(bad)
