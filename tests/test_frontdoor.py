"""The local front door is a real HAProxy, run by its provider: what passes through it arrives
unchanged, a switch cuts no request and moves keep-alive clients, the drain comes from HAProxy's
own counters, and writes to a read-only clone are refused at the edge."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from multidict import CIMultiDict

from infra.local.haproxy import CONFIG_FILE, AdminSocket, hold_writes_for_copy
from infra.local.providers import (
    CutoverProvider,
    FrontDoorProvider,
    standalone_front_door_inputs,
)
from tests.helpers.waiting import wait_for
from zdd import gates, health
from zdd.bench.frontdoor import parse_wrk
from zdd.phases import HELD_HEADER, SERVED_BY_HEADER
from zdd.processes import free_port
from zdd.targets.local import LOCAL

MIB = 2**20
PATTERN = bytes(range(256)) * (MIB // 256)
GZIPPED = gzip.compress(b"the same bytes, compressed once by the origin\n" * 500, mtime=0)


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes of a repeating pattern, a MiB at a time."""
    for start in range(0, size, MIB):
        yield PATTERN[: min(MIB, size - start)]


class Origin:
    """An aiohttp site in a thread of its own that echoes what it got and logs every request
    (health checks aside)."""

    def __init__(self, health_status: int = 200) -> None:
        self.port = free_port()
        # What `/healthz` answers: any 2xx counts as healthy (README, "Gates between phases").
        self.health_status = health_status
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[tuple[str, str]] = []
        # Path -> time.monotonic() when the origin had sent the whole response.
        self.finished: dict[str, float] = {}
        self.last_chunk = threading.Event()
        # When set, `/vanish` drops the connection without an answer, as a process that died.
        self.vanishing = False
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self._app(), handle_signals=False)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _app(self) -> web.Application:
        @web.middleware
        async def access_log(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/healthz":
                self.log.append((request.method, request.raw_path))
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[access_log], client_max_size=2**40)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/cookies", self._cookies)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_get("/download", self._download)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/slow", self._slow)
        app.router.add_post("/slow", self._slow)
        app.router.add_route("*", "/vanish", self._vanish)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        if self.health_status == 204:
            return web.Response(status=204)
        return web.Response(status=self.health_status, text="ok")

    async def _echo(self, request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(MIB):
            digest.update(chunk)
            size += len(chunk)
        headers = [[k.decode(), v.decode()] for k, v in request.raw_headers]
        seen = {"raw_path": request.raw_path, "headers": headers, "size": size}
        return web.json_response({**seen, "sha256": digest.hexdigest()})

    async def _cookies(self, _: web.Request) -> web.Response:
        headers = CIMultiDict(
            [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"), ("X-Twice", "one")]
        )
        headers.add("X-Twice", "two")
        return web.Response(text="cookies", headers=headers)

    async def _gzip(self, _: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        return web.Response(body=GZIPPED, headers=headers)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["bytes"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for chunk in pattern(size):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"first\n")
        # The last chunk waits until the client has seen the first one (or 20 s): a front
        # door that buffers the response would make the client wait for both.
        got = await asyncio.get_running_loop().run_in_executor(None, self.last_chunk.wait, 20)
        await response.write(b"last, sent after the client had the first\n" if got else b"late\n")
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo: {message.data}")
        return ws

    async def _vanish(self, request: web.Request) -> web.Response:
        if not self.vanishing:
            return await self._echo(request)
        await asyncio.sleep(float(request.query.get("after", "0")))
        assert request.transport is not None
        request.transport.abort()
        raise web.HTTPInternalServerError()  # never sent: the connection is gone

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query["seconds"]))
        response = web.StreamResponse(headers={"Content-Length": "4"})
        await response.prepare(request)
        await response.write(b"done")
        await response.write_eof()
        self.finished[request.path_qs] = time.monotonic()
        return response

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class FrontDoor:
    """The provider's HAProxy for two origins; `set` applies a change as an update would."""

    def __init__(self, state_dir: Path, origins: dict[str, Origin]) -> None:
        self.origins = origins
        self.provider = FrontDoorProvider()
        servers = {name: f"127.0.0.1:{o.port}" for name, o in origins.items()}
        props = standalone_front_door_inputs(free_port(), servers, state_dir)
        self.outs: dict[str, Any] = self.provider.create(props).outs or {}
        self.public = self.outs["public_url"]
        self.admin = AdminSocket(self.outs["socket_path"])

    def props(self, **change: Any) -> dict[str, Any]:
        outputs = ("pid", "public_url", "socket_path")
        props = {k: v for k, v in self.outs.items() if k not in outputs}
        return {**props, **change}

    def set(self, **change: Any) -> bool:
        """Apply `change` if the provider sees one; True when it did."""
        news = self.props(**change)
        if not self.provider.diff("front-door", self.outs, news).changes:
            return False
        self.outs = self.provider.update("front-door", self.outs, news).outs or {}
        return True

    def in_flight(self, origin: str) -> int:
        return LOCAL.in_flight({"front_door_socket": self.outs["socket_path"]}, origin)

    def stop(self) -> None:
        self.provider.delete("front-door", self.outs)


@pytest.fixture
def origins(request: pytest.FixtureRequest) -> Iterator[dict[str, Origin]]:
    # Parametrized indirectly, the origins' health path answers that status.
    health = getattr(request, "param", 200)
    started = {"primary": Origin(health), "clone": Origin(health)}
    for origin in started.values():
        origin.start()
    yield started
    for origin in started.values():
        origin.last_chunk.set()
        origin.stop()


@pytest.fixture
def front_door(origins: dict[str, Origin]) -> Iterator[FrontDoor]:
    # Short: a unix socket's path must fit in 107 bytes, which pytest's tmp_path may not.
    state_dir = Path(tempfile.mkdtemp(prefix="zdd-fd-"))
    door = FrontDoor(state_dir, origins)
    yield door
    door.stop()
    shutil.rmtree(state_dir)


def served_by(response: httpx.Response | http.client.HTTPResponse) -> str | None:
    return response.headers.get(SERVED_BY_HEADER)


# -- what passes through arrives unchanged ---------------------------------------------------


def test_paths_and_queries_arrive_byte_for_byte(front_door: FrontDoor) -> None:
    # http.client sends the request target exactly as written (httpx would normalise it).
    targets = [
        "/a%2Fb/c",
        "/%25/x?q=%2541",
        "/plus+sign?a=b+c&d=%2B",
        "/caf%C3%A9/%E2%82%AC?name=J%C3%BCrgen&emoji=%F0%9F%99%82",
        "/a//b/./c/../d?x=1&x=2&empty=&flag",
    ]
    host, port = front_door.public.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    for target in targets:
        connection.request("GET", target)
        response = connection.getresponse()
        assert response.status == 200 and served_by(response) == "primary"
        assert json.loads(response.read())["raw_path"] == target
    connection.close()
    assert [path for _, path in front_door.origins["primary"].log] == targets


def test_repeated_request_and_response_headers_are_all_kept(front_door: FrontDoor) -> None:
    sent = [("X-Repeat", "one"), ("X-Repeat", "two"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    echoed = httpx.get(f"{front_door.public}/echo", headers=sent, timeout=10).json()
    # Names arrive in lower case (HAProxy's; names are case-insensitive), values and order as sent.
    received = [(k, v) for k, v in echoed["headers"] if k in ("x-repeat", "cookie")]
    assert received == [(k.lower(), v) for k, v in sent]
    cookies = httpx.get(f"{front_door.public}/cookies", timeout=10)
    assert cookies.headers.get_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert cookies.headers.get_list("X-Twice") == ["one", "two"]


def test_a_gzip_response_keeps_its_encoding_and_bytes(front_door: FrontDoor) -> None:
    with httpx.stream("GET", f"{front_door.public}/gzip", timeout=10) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["Content-Encoding"] == "gzip"
    assert raw == GZIPPED


def test_a_100_mb_upload_and_download_pass(front_door: FrontDoor) -> None:
    size = 100 * MIB
    expected = hashlib.sha256(b"".join(pattern(size))).hexdigest()
    uploaded = httpx.post(f"{front_door.public}/upload", content=pattern(size), timeout=60)
    assert uploaded.status_code == 200
    assert uploaded.json()["size"] == size and uploaded.json()["sha256"] == expected
    digest, received = hashlib.sha256(), 0
    url = f"{front_door.public}/download?bytes={size}"
    with httpx.stream("GET", url, timeout=60) as response:
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert response.status_code == 200
    assert received == size and digest.hexdigest() == expected


def test_a_chunked_response_streams(front_door: FrontDoor) -> None:
    origin = front_door.origins["primary"]
    with httpx.stream("GET", f"{front_door.public}/stream", timeout=30) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # Only now may the origin send its last chunk.
        origin.last_chunk.set()
        rest = b"".join(chunks)
    assert first == b"first\n"
    assert rest == b"last, sent after the client had the first\n"


def test_a_websocket_echo_works(front_door: FrontDoor) -> None:
    async def talk() -> list[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{front_door.public}/ws") as ws,
        ):
            answers = []
            for text in ("hello", "again"):
                await ws.send_str(text)
                answers.append((await ws.receive(timeout=10)).data)
            return answers

    # A loop of its own: `asyncio.run` would leave this thread without one, which the Pulumi
    # mocks of tests that run after this one in the same worker need.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(talk()) == ["echo: hello", "echo: again"]
    finally:
        loop.close()


# -- switching -------------------------------------------------------------------------------


def test_a_switch_moves_keep_alive_clients_and_changes_nothing_when_repeated(
    front_door: FrontDoor,
) -> None:
    host, port = front_door.public.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=10)

    def answered_by() -> str | None:
        client.request("GET", "/echo")
        response = client.getresponse()
        response.read()
        return served_by(response)

    assert [answered_by() for _ in range(3)] == ["primary"] * 3
    assert front_door.set(active="clone")
    # The same connection: each request is routed on its own.
    assert [answered_by() for _ in range(3)] == ["clone"] * 3
    gates.wait_public_origin(front_door.public, "clone", header=SERVED_BY_HEADER, timeout=5)
    pid = front_door.outs["pid"]
    assert not front_door.set(active="clone")
    assert front_door.outs["pid"] == pid
    client.close()


def test_the_switch_under_load_fails_no_request(front_door: FrontDoor) -> None:
    stop = threading.Event()
    answers: list[tuple[int, str | None]] = []

    async def load() -> None:
        async with aiohttp.ClientSession(front_door.public) as session:

            async def one_client() -> None:
                while not stop.is_set():
                    try:
                        async with session.post("/write", data=b"x" * 100) as response:
                            await response.read()
                            origin = response.headers.get(SERVED_BY_HEADER)
                            answers.append((response.status, origin))
                    except aiohttp.ClientError as exc:
                        answers.append((0, type(exc).__name__))

            await asyncio.gather(*(one_client() for _ in range(16)))

    loader = threading.Thread(target=lambda: asyncio.run(load()))
    loader.start()
    for active in ("clone", "primary", "clone", "primary"):
        time.sleep(0.5)
        front_door.set(active=active)
    time.sleep(0.5)
    stop.set()
    loader.join()
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == []
    assert {origin for _, origin in answers} == {"primary", "clone"}
    assert len(answers) > 100


def test_a_sixty_second_request_outlives_the_cutover_and_holds_the_drain(
    front_door: FrontDoor,
) -> None:
    primary = front_door.origins["primary"]
    slow: dict[str, Any] = {}

    def request() -> None:
        response = httpx.get(f"{front_door.public}/slow?seconds=60", timeout=120)
        slow.update(response=response, ended=time.monotonic())

    started = time.monotonic()
    client = threading.Thread(target=request)
    client.start()
    wait_for(lambda: front_door.admin.servers()["primary"].sessions == 1)
    front_door.set(active="clone")
    assert httpx.get(f"{front_door.public}/echo", timeout=10).headers[SERVED_BY_HEADER] == "clone"
    assert front_door.in_flight("primary") == 1
    gates.wait_none_in_flight(lambda: front_door.in_flight("primary"), "primary", timeout=90)
    drained = time.monotonic()
    client.join()
    response = slow["response"]
    assert response.status_code == 200 and response.text == "done"
    assert served_by(response) == "primary"
    # The gate passed after the origin had answered, not before.
    assert primary.finished["/slow?seconds=60"] <= drained
    assert drained - started >= 60


def _cutover(front_door: FrontDoor, drain_within: float) -> dict[str, Any]:
    """The program's own switch to the clone (`front-door-cutover`) on this front door."""
    props = {**front_door.props(), "writes": "held", "drain_within": drain_within}
    return CutoverProvider().create(props).outs or {}


def test_the_programs_switch_to_the_clone_ends_only_once_the_primary_answered(
    front_door: FrontDoor,
) -> None:
    """Every change of the primary waits for this switch (its restore point depends on it): it
    must not end while a request is still on its way at the primary."""
    primary = front_door.origins["primary"]
    slow: dict[str, httpx.Response] = {}
    client = threading.Thread(
        target=lambda: slow.update(
            response=httpx.get(f"{front_door.public}/slow?seconds=2", timeout=30)
        )
    )
    client.start()
    wait_for(lambda: front_door.admin.servers()["primary"].sessions == 1)
    switched = _cutover(front_door, drain_within=30)
    ended = time.monotonic()
    client.join()
    assert primary.finished["/slow?seconds=2"] <= ended
    assert slow["response"].text == "done" and served_by(slow["response"]) == "primary"
    assert switched["switched_at"] <= time.time()
    assert served_by(httpx.get(f"{front_door.public}/echo", timeout=10)) == "clone"
    # A front door that restarts now comes back with the clone holding the traffic.
    config = (Path(front_door.outs["folder"]) / CONFIG_FILE).read_text().splitlines()
    primary_line = next(line for line in config if line.strip().startswith("server primary "))
    assert primary_line.endswith(" disabled")
    # Its own resource sees the traffic is not where its state says (primary), with no input
    # changed, and the next update moves it back.
    assert front_door.set()
    assert served_by(httpx.get(f"{front_door.public}/echo", timeout=10)) == "primary"
    assert not front_door.set()


def test_a_primary_that_does_not_drain_in_time_fails_the_switch_as_a_gate(
    front_door: FrontDoor,
) -> None:
    client = threading.Thread(
        target=lambda: httpx.get(f"{front_door.public}/slow?seconds=3", timeout=30)
    )
    client.start()
    wait_for(lambda: front_door.admin.servers()["primary"].sessions == 1)
    with pytest.raises(RuntimeError, match=r"drain check: 1 request\(s\) still in flight"):
        _cutover(front_door, drain_within=0.5)
    client.join()


def test_a_read_cut_by_an_origin_that_died_is_answered_by_the_other_and_a_write_is_not(
    front_door: FrontDoor,
) -> None:
    primary, clone = front_door.origins["primary"], front_door.origins["clone"]
    primary.vanishing = True
    answers: dict[str, httpx.Response] = {}

    def send(method: str) -> None:
        url = f"{front_door.public}/vanish?after=1.5"
        body = b"x" if method == "POST" else None
        answers[method] = httpx.request(method, url, content=body, timeout=30)

    clients = [threading.Thread(target=send, args=(m,)) for m in ("GET", "POST")]
    for client in clients:
        client.start()
    wait_for(lambda: front_door.admin.servers()["primary"].sessions == 2)
    front_door.set(active="clone")  # the cutover, while the primary is about to die
    for client in clients:
        client.join()
    # The read is sent again to the server that now takes the traffic...
    assert answers["GET"].status_code == 200 and served_by(answers["GET"]) == "clone"
    # ...the write is not: the origin that died might have applied it before dying.
    assert answers["POST"].status_code >= 500
    assert ("POST", "/vanish?after=1.5") not in clone.log


def test_a_client_that_left_still_counts_until_its_origin_answers(front_door: FrontDoor) -> None:
    primary = front_door.origins["primary"]
    host, port = front_door.public.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b"GET /slow?seconds=3 HTTP/1.1\r\nHost: site\r\n\r\n")
        wait_for(lambda: front_door.admin.servers()["primary"].sessions == 1)
    front_door.set(active="clone")
    assert front_door.in_flight("primary") == 1
    gates.wait_none_in_flight(lambda: front_door.in_flight("primary"), "primary", timeout=30)
    drained = time.monotonic()
    assert primary.finished["/slow?seconds=3"] <= drained


@pytest.mark.parametrize("origins", [204], indirect=True)
def test_a_health_path_that_answers_204_passes_the_front_door_and_the_gates(
    front_door: FrontDoor,
) -> None:
    # HAProxy's own check and the driver's gates agree that any 2xx is healthy: the server is
    # up, a switch to it completes, and the public endpoint counts as moved.
    wait_for(lambda: front_door.admin.servers()["primary"].passes_checks)
    assert httpx.get(f"{front_door.public}/healthz", timeout=10).status_code == 204
    assert front_door.set(active="clone")
    assert front_door.admin.servers()["clone"].passes_checks
    gates.wait_public_origin(
        front_door.public, "clone", header=SERVED_BY_HEADER, path="/healthz", timeout=10
    )
    health.wait_healthy(
        front_door.origins["clone"].url,
        health.Identity("v1", "clone"),
        what="the clone",
        timeout=5,
        health_path="/healthz",
    )


# -- read-only at the edge -------------------------------------------------------------------


def test_writes_to_a_read_only_clone_are_refused_at_the_edge(front_door: FrontDoor) -> None:
    clone = front_door.origins["clone"]
    front_door.set(active="clone", writes="refused")
    writes = ("POST", "PUT", "PATCH", "DELETE")
    for method in writes:
        refused = httpx.request(method, f"{front_door.public}/api/articles", timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
        assert served_by(refused) is None
        assert refused.json()["error"] == "read-only"
    for method in ("GET", "HEAD", "OPTIONS"):
        passed = httpx.request(method, f"{front_door.public}/api/articles", timeout=10)
        assert passed.status_code == 200 and served_by(passed) == "clone"
    assert [method for method, _ in clone.log] == ["GET", "HEAD", "OPTIONS"]
    # Read-write: the edge passes writes.
    front_door.set(writes="passed")
    assert httpx.post(f"{front_door.public}/api/articles", timeout=10).status_code == 200
    assert clone.log[-1] == ("POST", "/api/articles")


def post_in_background(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    """A visitor's write that may wait at the front door; its answer lands in the dict."""
    answer: dict[str, Any] = {}

    def send() -> None:
        try:
            response = httpx.post(url, json={"title": "held"}, timeout=60)
            answer.update(status=response.status_code, headers=response.headers)
            answer["body"] = response.text
        except httpx.HTTPError as exc:
            answer["error"] = exc
        answer["at"] = time.monotonic()

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def test_a_held_write_is_carried_out_by_the_primary_once_it_has_the_traffic_back(
    front_door: FrontDoor,
) -> None:
    primary, clone = front_door.origins["primary"], front_door.origins["clone"]
    front_door.set(active="clone", writes="held")
    thread, answer = post_in_background(f"{front_door.public}/api/articles")
    time.sleep(1.0)
    assert not answer, "the write was answered while it should be held"
    assert ("POST", "/api/articles") not in primary.log + clone.log
    let_go = time.monotonic()
    front_door.set(active="primary", writes="passed")
    thread.join(30)
    assert answer["status"] == 200 and answer["at"] >= let_go
    assert answer["headers"][SERVED_BY_HEADER] == "primary"
    assert int(answer["headers"][HELD_HEADER]) >= 500  # it waited at the front door
    assert ("POST", "/api/articles") in primary.log
    assert ("POST", "/api/articles") not in clone.log, "a held write reached the clone"
    # Reads were never held.
    assert httpx.get(f"{front_door.public}/echo", timeout=10).status_code == 200


def test_a_write_held_past_its_bound_is_refused_with_retry_after(front_door: FrontDoor) -> None:
    front_door.set(active="clone", writes="held", hold_seconds=1.0)
    started = time.monotonic()
    refused = httpx.post(f"{front_door.public}/api/articles", timeout=30)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    assert 1.0 <= time.monotonic() - started < 10
    logs = front_door.origins["primary"].log + front_door.origins["clone"].log
    assert not [entry for entry in logs if entry[0] == "POST"], "a refused write reached a site"


def test_held_writes_are_refused_when_the_deployment_stops_for_approval(
    front_door: FrontDoor,
) -> None:
    front_door.set(active="clone", writes="held")
    thread, answer = post_in_background(f"{front_door.public}/api/articles")
    time.sleep(0.5)
    front_door.set(writes="refused")
    thread.join(30)
    assert answer["status"] == 503 and answer["headers"]["Retry-After"] == "30"
    assert ("POST", "/api/articles") not in front_door.origins["clone"].log


def test_a_front_door_killed_while_holding_applies_no_held_write(front_door: FrontDoor) -> None:
    primary, clone = front_door.origins["primary"], front_door.origins["clone"]
    front_door.set(active="clone", writes="held")
    thread, answer = post_in_background(f"{front_door.public}/api/articles")
    time.sleep(0.5)
    os.killpg(front_door.outs["pid"], signal.SIGKILL)
    os.waitpid(front_door.outs["pid"], 0)
    thread.join(30)
    assert "error" in answer, "the held request's connection is what a dead front door loses"
    assert front_door.set()  # back, from a config that holds writes still
    assert ("POST", "/api/articles") not in primary.log + clone.log
    thread, answer = post_in_background(f"{front_door.public}/api/articles")
    time.sleep(0.5)
    assert not answer
    front_door.set(active="primary", writes="passed")
    thread.join(30)
    assert answer["status"] == 200
    assert [entry for entry in primary.log if entry[0] == "POST"] == [("POST", "/api/articles")]


def test_the_copy_waits_for_writes_already_in_flight(front_door: FrontDoor) -> None:
    thread, answer = post_in_background(f"{front_door.public}/slow?seconds=2")
    wait_for(lambda: front_door.admin.writes_in_flight() == 1)
    hold_writes_for_copy(Path(front_door.outs["folder"]), timeout=30)
    held_at = time.monotonic()
    assert answer["status"] == 200 and answer["at"] <= held_at
    assert front_door.admin.writes_in_flight() == 0
    thread.join(10)
    # New writes now wait; a restarted front door would hold them too (its map on disk).
    assert "writes held" in (Path(front_door.outs["folder"]) / "frontdoor.map").read_text()


def test_read_write_mode_holds_nothing(front_door: FrontDoor) -> None:
    front_door.set(active="clone", writes="passed")
    started = time.monotonic()
    written = httpx.post(f"{front_door.public}/api/articles", timeout=10)
    assert written.status_code == 200 and HELD_HEADER not in written.headers
    assert time.monotonic() - started < 1
    assert served_by(written) == "clone"


def test_a_front_door_in_a_deep_folder_is_still_switched_through_its_admin_socket(
    origins: dict[str, Origin],
) -> None:
    base = Path(tempfile.mkdtemp(prefix="zdd-deep-"))
    deep = base / ("a-checkout-folder-with-a-long-name-" * 2) / ("and-deeper-still-" * 3)
    deep.mkdir(parents=True)
    assert len(str(deep / "frontdoor.sock")) > 107  # more than a unix socket address holds
    door = FrontDoor(deep, origins)
    try:
        assert door.set(active="clone")
        assert served_by(httpx.get(f"{door.public}/echo", timeout=10)) == "clone"
        assert door.admin.servers()["clone"].takes_traffic
    finally:
        door.stop()
        shutil.rmtree(base)


def test_only_its_owner_can_use_the_admin_socket(front_door: FrontDoor) -> None:
    mode = os.stat(front_door.outs["socket_path"]).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_dead_front_door_comes_back_with_the_current_traffic(front_door: FrontDoor) -> None:
    front_door.set(active="clone", writes="refused")
    # HAProxy and the supervisor that would start it again die together (the process group).
    os.killpg(front_door.outs["pid"], signal.SIGKILL)
    os.waitpid(front_door.outs["pid"], 0)  # started by this process: gone once reaped
    assert front_door.set()
    assert served_by(httpx.get(f"{front_door.public}/echo", timeout=10)) == "clone"
    assert httpx.post(f"{front_door.public}/echo", timeout=10).status_code == 503
    servers = front_door.admin.servers()
    assert servers["clone"].takes_traffic and not servers["primary"].takes_traffic


# -- the benchmark reads wrk's report --------------------------------------------------------

WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:28777/nonexistent
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms  431.31us   6.48ms   80.32%
    Req/Sec     1.84k    60.88     1.93k    70.00%
  Latency Distribution
     50%  960.00us
     75%    1.22ms
     90%    1.47ms
     99%    2.40s
  1830 requests in 1.00s, 0.91MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 1830
Requests/sec:   1829.44
Transfer/sec:      0.91MB
"""


def test_the_benchmark_reads_wrk_reports_in_milliseconds() -> None:
    assert parse_wrk(WRK_REPORT) == {
        "requests_per_second": 1829.4,
        "p50_ms": 0.96,
        "p99_ms": 2400.0,
        "failed": 1833,
    }
