"""The local front door: a reverse proxy whose active origin the stack sets.

Each request is bound to the origin that is active when it arrives, so switching the origin
never cuts an in-flight request; the proxy counts in-flight requests per origin so that the
driver's drain check can wait for the old origin to go quiet. Every response names the origin
that served it (`X-ZDD-Origin`). Admin calls (`/__frontdoor/state`) need the admin token.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ADMIN_PATH = "/__frontdoor/state"
ADMIN_TOKEN_HEADER = "X-ZDD-Admin-Token"
ADMIN_TOKEN_ENV = "ZDD_FRONTDOOR_TOKEN"
# Headers that describe one hop, not the message; never forwarded.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "host",
    # The front door's own server sets these.
    "date", "server",
}


class FrontDoorState:
    def __init__(self, path: Path, origins: dict[str, str], active: str) -> None:
        self.path = path
        self.origins = origins
        self.active = active
        self.inflight: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        if path.exists():  # a restarted front door keeps the origin the stack last set
            saved = json.loads(path.read_text())
            self.origins, self.active = saved["origins"], saved["active"]
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"origins": self.origins, "active": self.active}))
        tmp.replace(self.path)

    def as_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "origins": self.origins,
            "inflight": {name: self.inflight[name] for name in self.origins},
            "served": {name: self.served[name] for name in self.origins},
        }


def create_app(state: FrontDoorState, admin_token: str) -> Starlette:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
        timeout=httpx.Timeout(30.0),
    )

    async def admin(request: Request) -> Response:
        if not secrets.compare_digest(request.headers.get(ADMIN_TOKEN_HEADER, ""), admin_token):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if request.method == "PUT":
            change = await request.json()
            origins = change.get("origins", state.origins)
            active = change.get("active", state.active)
            if active not in origins:
                return JSONResponse({"error": f"no origin named {active!r}"}, status_code=400)
            state.origins, state.active = origins, active
            state.save()
        return JSONResponse(state.as_json())

    async def forward(request: Request) -> Response:
        name = state.active
        base = state.origins[name]
        state.inflight[name] += 1
        try:
            upstream = await client.request(
                request.method,
                base + request.url.path,
                params=request.url.query,
                headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP],
                content=await request.body(),
            )
        except httpx.TransportError as exc:
            return JSONResponse(
                {"error": "bad-gateway", "origin": name, "detail": str(exc)},
                status_code=502,
                headers={"X-ZDD-Origin": name},
            )
        finally:
            state.inflight[name] -= 1
        state.served[name] += 1
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["X-ZDD-Origin"] = name
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route(ADMIN_PATH, admin, methods=["GET", "PUT"]),
            Route("/{path:path}", forward, methods=methods),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="frontdoor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--origin", action="append", default=[], help="NAME=URL, repeatable")
    parser.add_argument("--active", required=True)
    args = parser.parse_args(argv)
    origins = dict(item.split("=", 1) for item in args.origin)
    state = FrontDoorState(args.state, origins, args.active)
    app = create_app(state, os.environ[ADMIN_TOKEN_ENV])
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=10, backlog=2048,
    )


if __name__ == "__main__":
    main()
