"""Loopback stand-ins for Azure's endpoints (Front Door, a web app): small HTTP servers on
127.0.0.1 whose every answer a test decides; `site` is what one of the web apps answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from zdd import health

Answer = tuple[int, dict[str, str], bytes]


class StandIn:
    """A loopback HTTP server; `answer(path)` decides every response."""

    def __init__(self, answer: Callable[[str], Answer]) -> None:
        self.answer = answer
        self.seen: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.seen.append(
                    {
                        "path": self.path,
                        "client_port": self.client_address[1],
                        "cache_control": self.headers.get("Cache-Control"),
                    }
                )
                status, headers, body = stand_in.answer(urlparse(self.path).path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def site(instance: str, version: str = "v1", mode: str = "ReadWrite") -> Answer:
    """What one of the web apps answers, through Front Door."""
    identity = {"version": version, "instance": instance, "database_mode": mode}
    body = json.dumps({"status": "ok", **identity}).encode()
    headers = {
        "Content-Type": "application/json",
        health.APP_IDENTITY_HEADER: instance,
        "X-ZDD-Version": version,
    }
    return 200, headers, body
