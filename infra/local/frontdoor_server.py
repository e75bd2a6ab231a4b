"""The local front door: a reverse proxy whose active origin the stack sets.

Each request is bound to the origin that is active when it arrives, so switching the origin
never cuts an in-flight request; the proxy counts in-flight requests per origin so that the
driver's drain check can wait for the old origin to go quiet. Every response names the origin
that served it (`X-ZDD-Origin`). Admin calls (`/__frontdoor/state`) need the admin token.
Built on aiohttp (server and pooled client): several times the throughput of an ASGI stack
with httpx on the same two cores, which matters because the probe measures through it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ADMIN_PATH = "/__frontdoor/state"
ADMIN_TOKEN_HEADER = "X-ZDD-Admin-Token"
ADMIN_TOKEN_ENV = "ZDD_FRONTDOOR_TOKEN"
# Headers that describe one hop, not the message; never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "host",
        # The front door's own server sets these.
        "date",
        "server",
    }
)


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


def create_app(state: FrontDoorState, admin_token: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def open_session(app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=128)
        app[session_key] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False
        )
        yield
        await app[session_key].close()

    async def admin(request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.headers.get(ADMIN_TOKEN_HEADER, ""), admin_token):
            return web.json_response({"error": "forbidden"}, status=403)
        if request.method == "PUT":
            change = await request.json()
            origins = change.get("origins", state.origins)
            active = change.get("active", state.active)
            if active not in origins:
                return web.json_response({"error": f"no origin named {active!r}"}, status=400)
            state.origins, state.active = origins, active
            state.save()
        return web.json_response(state.as_json())

    async def forward(request: web.Request) -> web.Response:
        name = state.active
        base = state.origins[name]
        state.inflight[name] += 1
        try:
            async with request.app[session_key].request(
                request.method,
                base + request.rel_url.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP},
                data=await request.read(),
            ) as upstream:
                body = await upstream.read()
                headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                }
                status = upstream.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response(
                {"error": "bad-gateway", "origin": name, "detail": str(exc)},
                status=502,
                headers={"X-ZDD-Origin": name},
            )
        finally:
            state.inflight[name] -= 1
        state.served[name] += 1
        headers["X-ZDD-Origin"] = name
        return web.Response(body=body, status=status, headers=headers)

    app.cleanup_ctx.append(open_session)
    app.router.add_route("GET", ADMIN_PATH, admin)
    app.router.add_route("PUT", ADMIN_PATH, admin)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="frontdoor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--origin", action="append", default=[], help="NAME=URL, repeatable")
    parser.add_argument("--active", required=True)
    args = parser.parse_args(argv)
    origins = dict(item.split("=", 1) for item in args.origin)
    state = FrontDoorState(args.state, origins, args.active)
    # aiohttp finishes in-flight requests on SIGTERM before it exits.
    web.run_app(
        create_app(state, os.environ[ADMIN_TOKEN_ENV]),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=10,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
