"""The load probe's target from an app spec's `probe` section: parsing, refusals naming the field,
and a real probe run against a small site that keeps only some of the writes it acknowledges."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.helpers.commands import ROOT
from zdd.appspec import InvalidAppSpec
from zdd.probe import LoadProbe, ProbeTarget, WriteRequest
from zdd.processes import free_port

WRITE = {
    "method": "post",
    "path": "/items",
    "json": {"item": {"name": "{title}", "tags": ["{title}", 3]}},
    "status": 200,
    "lookup": "/items?name={title}",
}


def test_the_bundled_specs_describe_their_own_requests() -> None:
    sample = ProbeTarget.of_file(ROOT / "apps" / "sample" / "app.yaml")
    assert sample.reads == ("/", "/api/articles?limit=5")
    assert sample.write is not None and sample.write.status == 201
    mlflow = ProbeTarget.of_file(ROOT / "apps" / "mlflow" / "app.yaml")
    assert mlflow.write is not None
    assert mlflow.write.body_for("probe-1") == {"name": "probe-1"}


def test_a_spec_without_a_probe_section_is_only_read_at_its_root() -> None:
    assert ProbeTarget.of(None) == ProbeTarget.from_section({}) == ProbeTarget(("/",), None)


def test_the_title_fills_every_string_of_the_body() -> None:
    write = ProbeTarget.from_section({"write": WRITE}).write
    assert write == WriteRequest("POST", "/items", WRITE["json"], 200, "/items?name={title}")
    assert write.body_for("t-1") == {"item": {"name": "t-1", "tags": ["t-1", 3]}}


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"read": ["/"]}, "probe.read"),
        ({"reads": "/"}, "probe.reads"),
        ({"reads": ["health"]}, "probe.reads"),
        ({"write": {**WRITE, "body": {}}}, "probe.write"),
        ({"write": {**WRITE, "method": "PO ST"}}, "probe.write.method"),
        ({"write": {**WRITE, "path": "items"}}, "probe.write.path"),
        ({"write": {**WRITE, "status": 404}}, "probe.write.status"),
        ({"write": {**WRITE, "lookup": "/items"}}, "probe.write.lookup"),
    ],
)
def test_a_bad_section_is_refused_naming_its_field(section: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAppSpec, match=f"`{field}`"):
        ProbeTarget.from_section(section)


class ForgetfulSite:
    """Acknowledges every write but keeps only every other one; counts the paths it was read at."""

    def __init__(self) -> None:
        self.kept: set[str] = set()
        self.forgotten: set[str] = set()
        self.reads: Counter[str] = Counter()

    async def write(self, request: web.Request) -> web.Response:
        name = (await request.json())["item"]["name"]
        chosen = self.kept if len(self.kept) <= len(self.forgotten) else self.forgotten
        chosen.add(name)
        return web.json_response({"ok": True})

    async def read(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        if name is None:
            self.reads[request.path_qs] += 1
            return web.json_response([])
        return web.json_response([name] if name in self.kept else [])


@pytest.fixture
def forgetful_site() -> Iterator[tuple[str, ForgetfulSite]]:
    site = ForgetfulSite()
    app = web.Application()
    app.router.add_post("/items", site.write)
    app.router.add_get("/items", site.read)
    app.router.add_get("/", site.read)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", site
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_the_probe_reports_the_acknowledged_writes_the_site_did_not_keep(
    forgetful_site: tuple[str, ForgetfulSite],
) -> None:
    url, site = forgetful_site
    target = ProbeTarget.from_section({"reads": ["/", "/items?limit=5"], "write": WRITE})
    probe = LoadProbe(url, target, rate=200)
    probe.start()
    deadline = time.monotonic() + 30
    while len(site.kept) + len(site.forgotten) < 4:
        assert time.monotonic() < deadline, "the probe wrote nothing"
        time.sleep(0.05)
    probe.stop()
    report = probe.report()
    assert report.failed == 0, report.failures
    assert report.writes_acknowledged == len(site.kept) + len(site.forgotten)
    assert set(report.lost_titles) == site.forgotten and report.writes_lost == len(site.forgotten)
    assert set(site.reads) == {"/", "/items?limit=5"}
    read_backs = [s for s in probe.samples if s.kind == "read-back"]
    assert report.requests == report.writes_acknowledged + sum(site.reads.values()) + len(
        read_backs
    )
    # A write read back later that the site does not show is hidden; a kept one never is.
    assert set(report.hidden_titles) <= site.forgotten
    assert report.writes_hidden == len({s.title for s in read_backs if s.title in site.forgotten})
