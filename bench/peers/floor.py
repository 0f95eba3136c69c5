"""P0, the floor: a minimal Starlette app on the gateway's uvicorn settings (uvloop, httptools,
one worker, no access log) answering POST /rag with a fixed JSON body.

The body is a real /rag answer captured from the gateway by the harness (`--body FILE`), so the
bytes on the wire are the same size. Nothing here can get faster without changing the server
stack itself: this is the ceiling for any Python service on it.

    python -m bench.peers.floor --port 8101 --body answer.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.peers import serve


def make_app(body: bytes) -> Starlette:
    async def rag(request: Request) -> Response:
        await request.body()  # read what the client sent, as any real handler must
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/rag", rag, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="the JSON answer to send")
    args = parser.parse_args()
    serve(make_app(args.body.read_bytes()), args.port)


if __name__ == "__main__":
    main()
