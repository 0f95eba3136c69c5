"""The gateway as a hostile client meets it: `python -m app` in its own process (uvicorn, the
production HTTP protocol), with API keys for two tenants and an admin, a real Redis, and raw
sockets to send what no well-behaved HTTP client would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from support.keys import Key, make_key
from support.proc import serve_app
from support.prom import metric

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 5.0


# no rate limit in the way of the probes
MALLORY = make_key("mallory-1", "acme", rate_limit=1_000_000)  # the hostile tenant
ALICE = make_key("alice-1", "default", rate_limit=1_000_000)  # another tenant, with the corpus
ADMIN = make_key("admin-1", "default", admin=True, rate_limit=1_000_000)


@dataclass
class Gateway:
    """A running `python -m app` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="strict").splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_gateway(port: int, env_overrides: dict[str, str], log_path: Path) -> Gateway:
    env = {
        **os.environ,
        "RAG_AUTH__KEYS": json.dumps([k.entry() for k in (MALLORY, ALICE, ADMIN)]),
        "RAG_SERVER__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "RAG_SERVER__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "RAG_LOGGING__LEVEL": "INFO",
        # each line written as it is logged: tests read the log right after their requests
        "RAG_LOGGING__FLUSH_INTERVAL_S": "0",
        **env_overrides,
    }
    proc = serve_app(port, env, log_path, "/livez", timeout_s=90)
    return Gateway(proc, port, log_path, env)


async def request_count(client: httpx.AsyncClient, method: str, route: str, status: int) -> float:
    return await metric(
        client,
        "http_server_request_duration_seconds_count",
        method=method,
        route=route,
        status=str(status),
    )


async def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a fresh connection, half-close nothing, and read until the server closes
    the connection (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the first HTTP response in `raw`."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def rag_request(body: bytes, key: Key | None = None, content_type: bytes = b"application/json") -> bytes:
    auth = key.header_line if key is not None else b""
    return (
        b"POST /rag HTTP/1.1\r\nHost: gateway\r\n" + auth + b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
