"""Snapshots on the Qdrant server backend go through the server's snapshot API (qdrant-client
against a fake Qdrant over real HTTP): create with the point count, list newest first, retention
by DELETE, delete of an unknown name is NotFound, restore asks the server to recover from its own
URL of the snapshot with the listed checksum and starts a new answer-cache generation; a refused
recovery reaches the caller as a domain error."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.httpserver import serve_in_thread

from app.clients.vectorstore.server import ServerStore
from app.clients.vectorstore.swap import SwappableStore
from app.errors import InputRejected, NotFound
from app.settings import Settings
from app.snapshots.remote import ServerSnapshots


class FakeQdrant:
    """The snapshot endpoints of one collection, and a point count."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.recovered: list[dict[str, Any]] = []
        self.refuse_recovery = False
        self.lock = threading.Lock()

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, result: Any) -> None:
                body = json.dumps({"result": result, "status": "ok", "time": 0.001}).encode()
                if status >= 400:
                    body = json.dumps({"status": {"error": "checksum mismatch"}, "time": 0.001}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:
                if self.path.startswith("/collections/rag_docs/snapshots"):
                    with fake.lock:
                        self._send(200, list(fake.snapshots))
                else:
                    self._send(404, None)

            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                if path == "/collections/rag_docs/points/count":
                    self._body()
                    self._send(200, {"count": 42})
                elif path == "/collections/rag_docs/snapshots":
                    with fake.lock:
                        n = len(fake.snapshots) + 1
                        snap = {
                            "name": f"rag_docs-7-2026-12-03-10-00-{n:02d}.snapshot",
                            "creation_time": f"2026-12-03T10:00:{n:02d}",
                            "size": 1000 + n,
                            "checksum": f"{n:064x}",
                        }
                        fake.snapshots.append(snap)
                    self._send(200, snap)
                else:
                    self._send(404, None)

            def do_PUT(self) -> None:
                if self.path.split("?")[0] == "/collections/rag_docs/snapshots/recover":
                    body = self._body()
                    if fake.refuse_recovery:
                        self._send(400, None)
                        return
                    fake.recovered.append(body)
                    self._send(200, True)
                else:
                    self._send(404, None)

            def do_DELETE(self) -> None:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                with fake.lock:
                    found = [s for s in fake.snapshots if s["name"] == name]
                    for s in found:
                        fake.snapshots.remove(s)
                self._send(200 if found else 404, True)

        return Handler


@pytest.fixture
def fake() -> Iterator[tuple[FakeQdrant, str]]:
    qdrant = FakeQdrant()
    server = serve_in_thread(qdrant.handler())
    try:
        yield qdrant, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_server_snapshots_go_through_the_servers_api(fake: tuple[FakeQdrant, str]) -> None:
    qdrant, url = fake
    settings = Settings(qdrant={"url": url, "timeout_s": 5}, snapshots={"keep": 2})
    server = ServerStore.from_settings(settings.qdrant)
    swaps: list[int] = []
    newest: list[float] = []

    async def on_swap() -> None:
        swaps.append(1)

    snaps = ServerSnapshots(
        settings, SwappableStore(server), server, on_swap=on_swap, on_newest=newest.append
    )
    try:
        first = await snaps.create()
        assert (first.name, first.points, first.size_bytes) == (
            "rag_docs-7-2026-12-03-10-00-01.snapshot",
            42,
            1001,
        )
        await snaps.create()
        third = await snaps.create()
        # keep=2: the oldest was deleted on the server
        assert [s.name for s in await snaps.snapshots()] == [
            third.name,
            "rag_docs-7-2026-12-03-10-00-02.snapshot",
        ]
        assert newest[-1] == third.created_at > 0

        restored = await snaps.restore(third.name)
        assert restored.name == third.name
        assert qdrant.recovered == [
            {"location": f"{url}/collections/rag_docs/snapshots/{third.name}", "checksum": third.sha256}
        ]
        assert swaps == [1]

        with pytest.raises(NotFound):
            await snaps.restore("rag_docs-unknown.snapshot")
        with pytest.raises(NotFound):
            await snaps.delete("rag_docs-unknown.snapshot")
        qdrant.refuse_recovery = True
        with pytest.raises(InputRejected):
            await snaps.restore(third.name)
        assert swaps == [1]

        await snaps.delete(third.name)
        assert [s.name for s in await snaps.snapshots()] == ["rag_docs-7-2026-12-03-10-00-02.snapshot"]
    finally:
        await server.aclose()
