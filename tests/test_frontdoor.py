"""The local front door: switching origins never fails an in-flight request, in-flight
requests are counted per origin, and admin calls need the token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from infra.local.frontdoor_server import ADMIN_PATH, ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER

TOKEN = "test-token"


def origin(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow":
                time.sleep(1.5)
            body = name.encode()
            self.send_response(200)
            self.send_header("X-ZDD-Instance", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def front_door(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    servers = {name: origin(name) for name in ("primary", "clone")}
    urls = {name: f"http://127.0.0.1:{s.server_address[1]}" for name, s in servers.items()}
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "infra.local.frontdoor_server",
        "--port",
        str(port),
        "--state",
        str(tmp_path / "fd.json"),
        "--active",
        "primary",
    ]
    argv += [f"--origin={name}={url}" for name, url in urls.items()]
    proc = subprocess.Popen(argv, env={**os.environ, ADMIN_TOKEN_ENV: TOKEN})
    public = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(public + "/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield public, urls
    proc.terminate()
    proc.wait(timeout=15)
    for server in servers.values():
        server.shutdown()


def admin(public: str, **change: str) -> httpx.Response:
    headers = {ADMIN_TOKEN_HEADER: TOKEN}
    if change:
        return httpx.put(public + ADMIN_PATH, json=change, headers=headers, timeout=5)
    return httpx.get(public + ADMIN_PATH, headers=headers, timeout=5)


def test_switch_keeps_in_flight_requests_and_counts_them(
    front_door: tuple[str, dict[str, str]],
) -> None:
    public, _ = front_door
    slow: dict[str, httpx.Response] = {}
    request = threading.Thread(
        target=lambda: slow.update(r=httpx.get(public + "/slow", timeout=10))
    )
    request.start()
    time.sleep(0.5)
    assert admin(public).json()["inflight"]["primary"] == 1
    assert admin(public, active="clone").status_code == 200
    new = httpx.get(public + "/", timeout=5)
    assert new.headers["X-ZDD-Origin"] == "clone"
    request.join()
    # The request that was in flight finished on the origin it started on.
    assert slow["r"].status_code == 200 and slow["r"].text == "primary"
    assert slow["r"].headers["X-ZDD-Origin"] == "primary"
    state = admin(public).json()
    assert state["inflight"] == {"primary": 0, "clone": 0}
    assert state["active"] == "clone"


def test_admin_needs_the_token_and_a_known_origin(front_door: tuple[str, dict[str, str]]) -> None:
    public, _ = front_door
    assert httpx.put(public + ADMIN_PATH, json={"active": "clone"}, timeout=5).status_code == 403
    assert admin(public, active="nowhere").status_code == 400
    assert httpx.get(public + "/", timeout=5).headers["X-ZDD-Origin"] == "primary"
