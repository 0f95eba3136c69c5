"""A small asyncio TCP fault proxy, run on its own event loop in a thread so that it keeps
forwarding (or not) whatever the test's own loop is doing.

Modes (switchable at any time, and applied to connections already open):
- pass: forward both ways.
- delay: forward both ways, each chunk `delay_s` late.
- black-hole: accept, read and drop everything; never answer, never close.
- reset: reset every connection (RST, via SO_LINGER 0) as soon as it is seen.
- close-after: forward, but close the connection once `after_bytes` bytes went back to the client.

Counters: `accepted` (client connections), `upstream_connects`, `bytes_up` / `bytes_down`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from dataclasses import dataclass, field


class Mode(enum.StrEnum):
    PASS = "pass"
    DELAY = "delay"
    BLACK_HOLE = "black-hole"
    RESET = "reset"
    CLOSE_AFTER = "close-after"


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    epoch: int = -1  # the mode epoch `sent_down` counts for
    sent_down: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = Mode.PASS
        self.delay_s = 0.0
        self.after_bytes = 0
        self.accepted = 0
        self.upstream_connects = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._epoch = 0
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.port = 0

    # --- control, from the test's thread ------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, mode: Mode | str, *, delay_s: float = 0.0, after_bytes: int = 0) -> None:
        self.mode = Mode(mode)
        self.delay_s = delay_s
        self.after_bytes = after_bytes
        self._epoch += 1
        if self.mode is Mode.RESET:
            self._loop.call_soon_threadsafe(self._reset_all)

    def drop_connections(self) -> None:
        """Reset every open connection (whatever the mode)."""
        self._loop.call_soon_threadsafe(self._reset_all)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # --- the proxy, on its own loop -----------------------------------------------------------

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        self._reset_all()
        for conn in list(self._conns):
            for t in conn.tasks:
                t.cancel()
        await asyncio.sleep(0)

    def _reset_all(self) -> None:
        for conn in list(self._conns):
            for w in conn.writers():
                _reset(w)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self.mode is Mode.RESET:
                _reset(writer)
                return
            if self.mode is Mode.BLACK_HOLE:
                while await reader.read(65536):
                    pass  # swallowed: no upstream, no answer
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 2.0)
            except (OSError, TimeoutError):
                writer.close()  # upstream down: the client sees its connection closed
                return
            self.upstream_connects += 1
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.ensure_future(self._pump(conn, reader, up_writer, down=False)),
                asyncio.ensure_future(self._pump(conn, up_reader, writer, down=True)),
            ]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for t in conn.tasks:
                t.cancel()
            for w in conn.writers():
                with contextlib.suppress(Exception):
                    w.close()
            self._conns.discard(conn)

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                mode = self.mode
                if mode is Mode.BLACK_HOLE:
                    continue
                if mode is Mode.RESET:
                    for w in conn.writers():
                        _reset(w)
                    return
                if mode is Mode.DELAY:
                    await asyncio.sleep(self.delay_s)
                if mode is Mode.CLOSE_AFTER and down:
                    if conn.epoch != self._epoch:
                        conn.epoch, conn.sent_down = self._epoch, 0
                    room = self.after_bytes - conn.sent_down
                    data = data[: max(room, 0)]
                    conn.sent_down += len(data)
                    if data:
                        writer.write(data)
                        await writer.drain()
                        self.bytes_down += len(data)
                    if conn.sent_down >= self.after_bytes:
                        return  # the caller closes both sides
                    continue
                writer.write(data)
                await writer.drain()
                if down:
                    self.bytes_down += len(data)
                else:
                    self.bytes_up += len(data)
