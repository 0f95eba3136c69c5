"""Peers the gateway is measured against, each run as its own uvicorn process."""

from __future__ import annotations

from typing import Any

import uvicorn


def serve(app: Any, port: int) -> None:
    """Serve a peer on the gateway's uvicorn settings: uvloop, httptools, one worker, no access log."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
    )
