"""The benchmark's front door figures: wrk through the local front door (HAProxy) and straight to
the origin, against a trivial origin and against the sample site, in the same run.

Each pair runs the same wrk command (`BENCH_WRK_SECONDS`, default 10 s, 2 threads, 16 keep-alive
connections) one after the other, on the same cores as everything else, so a figure is what a
visitor on this machine would get; the ratio is the front door's price. Without wrk (Debian
package `wrk`) the section is skipped with a note.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from infra.local.providers import FrontDoorProvider, standalone_front_door_inputs
from zdd.bench.stacks import BenchSite
from zdd.console import Say

WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
WRK_THREADS = 2
WRK_CONNECTIONS = 16
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms) and the failed answers of `wrk --latency`'s report."""

    def latency(percentile: str) -> float:
        found = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percentile}% latency in wrk's report:\n{output}")
        return round(float(found[1]) * _UNIT_MS[found[2]], 3)

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's report:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests_per_second": round(float(rate[1]), 1),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "failed": (int(non_2xx[1]) if non_2xx else 0)
        + (sum(int(n) for n in errors.groups()) if errors else 0),
    }


def run_wrk(url: str) -> dict[str, float]:
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{WRK_SECONDS}s",
        "--latency",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def compare(front_door_url: str, origin_url: str) -> dict[str, Any]:
    """The same load through the front door and straight to the origin."""
    through, direct = run_wrk(front_door_url), run_wrk(origin_url)
    return {
        "front_door": through,
        "direct": direct,
        "requests_ratio": round(through["requests_per_second"] / direct["requests_per_second"], 3),
    }


@contextmanager
def trivial_origin(port: int) -> Iterator[str]:
    """An aiohttp site on `port` answering `ok` to every GET, in a thread; yields its URL."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, handle_signals=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    try:
        asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def front_door_for(origin_port: int, port: int) -> Iterator[str]:
    """The project's front door (its provider, as an update runs it) in front of one origin."""
    state_dir = Path(tempfile.mkdtemp(prefix="zdd-bench-fd-"))
    props = standalone_front_door_inputs(port, {"primary": f"127.0.0.1:{origin_port}"}, state_dir)
    provider = FrontDoorProvider()
    outs = provider.create(props).outs or {}
    try:
        yield str(outs["public_url"])
    finally:
        provider.delete("front-door", outs)
        shutil.rmtree(state_dir, ignore_errors=True)


def figures(
    sample_site: Callable[[], AbstractContextManager[BenchSite]],
    free_port: Callable[[], int],
    say: Say,
) -> dict[str, Any]:
    """The section of `bench/results.json`; `sample_site()` gives a fresh idle stack."""
    if shutil.which("wrk") is None:
        note = "skipped: wrk is not installed (Debian/Ubuntu: apt-get install wrk)"
        say(f"front door: {note}")
        return {"skipped": note}
    say(f"front door: wrk, {WRK_THREADS} threads, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s")
    origin_port = free_port()
    with trivial_origin(origin_port) as origin, front_door_for(origin_port, free_port()) as door:
        trivial = compare(f"{door}/", f"{origin}/")
    with sample_site() as sample:
        site = compare(f"{sample.output('public_url')}/", f"{sample.output('primary_url')}/")
    for name, pair in (("trivial origin", trivial), ("sample site", site)):
        through, direct = pair["front_door"], pair["direct"]
        say(
            f"front door, {name}: {through['requests_per_second']:.0f} requests/s "
            f"(p99 {through['p99_ms']} ms) through HAProxy, {direct['requests_per_second']:.0f} "
            f"(p99 {direct['p99_ms']} ms) straight to the origin"
        )
    return {
        "tool": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s --latency",
        "trivial_origin": trivial,
        "sample_site": site,
    }
