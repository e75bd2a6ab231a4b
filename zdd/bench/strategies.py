"""Three ways to ship a new version under load, behind one interface: a maintenance stop, a
`pulumi up` in place, and the smooth deployment (`zdd deploy`)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from zdd import processes
from zdd.actions import Action
from zdd.appspec import Placement
from zdd.bench.load import Measured, measure, say, step
from zdd.bench.metrics import probe_figures, rounded
from zdd.bench.stacks import TO_VERSION, BenchSite
from zdd.chart import PhaseSpan
from zdd.phases import DatabaseMode, Instance, Mode
from zdd.probe import LoadProbe
from zdd.results import DeployResult
from zdd.sqlite_files import files_folder

# A clone phase that takes this long is stuck; see `Smooth._watch_clone`.
CLONE_STALL_SECONDS = 30.0


class Strategy(Protocol):
    """One way to ship `TO_VERSION` on an idle stack, timed under the probe."""

    name: str  # its key in the results
    title: str  # its panel in the chart
    method: str  # what it does, in one line
    # The resources of its one `pulumi up` that the chart shows as steps (name -> label).
    labels: Mapping[str, str]

    def prepare(self, site: BenchSite) -> None:
        """What comes before the clock starts (the config change that starts it)."""

    def run(self, site: BenchSite, probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        """The timed steps, each added to `spans`."""


def measure_strategy(site: BenchSite, strategy: Strategy, rate: float) -> Measured:
    strategy.prepare(site)
    say(f"{strategy.name}: {strategy.method}")
    return measure(
        site.output("public_url"),
        site.probe_target,
        rate,
        lambda probe, spans: strategy.run(site, probe, spans),
    )


def _listening_pids(port: int) -> list[int]:
    """The processes holding a listening socket on `port` (what `fuser PORT/tcp` says)."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    pids = []
    for fds in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in sockets for fd in fds.iterdir()):
                pids.append(int(fds.parent.name))
        except OSError:
            continue
    return pids


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


@dataclass
class Maintenance:
    name: str = "maintenance"
    title: str = "maintenance page (stop, migrate, start v2)"
    method: str = (
        "the primary's process is stopped (SIGTERM), the app spec's `migrate` runs on its "
        "database, then `pulumi up` with zdd:currentVersion=v2 starts v2; the front door "
        "answers 503 meanwhile"
    )
    labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "primary-db-migration": "migration check",
            "primary-process": "v2 starts",
        }
    )

    def prepare(self, site: BenchSite) -> None:
        site.stack.set_config({"currentVersion": TO_VERSION})

    def run(self, site: BenchSite, probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        with step(spans, "stop"):
            pids = _listening_pids(_port_of(site.output("primary_url")))
            if not pids:
                raise RuntimeError("nothing listens at the primary's address")
            for pid in pids:
                processes.terminate(pid)
        with step(spans, "migrate"):
            self._migrate(site)
        with step(spans, "start v2"):
            site.stack.up()
        with step(spans, "verify"):
            site.verify_public(TO_VERSION)

    @staticmethod
    def _migrate(site: BenchSite) -> None:
        spec = site.app
        placement = Placement(
            TO_VERSION,
            spec.release(TO_VERSION),
            str(Instance.PRIMARY),
            DatabaseMode.READ_WRITE,
            str(site.primary_database),
            str(files_folder(site.primary_database)),
            _port_of(site.output("primary_url")),
        )
        done = subprocess.run(
            spec.migrate_command(placement),
            cwd=placement.release,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migration to {TO_VERSION} failed:\n{done.stdout}{done.stderr}")


@dataclass
class InPlace:
    name: str = "in_place"
    title: str = "in place (pulumi up to v2)"
    method: str = (
        "zdd:currentVersion=v2 on the idle stack and `pulumi up`: the migration runs under v1, "
        "then the primary restarts on v2"
    )
    labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "primary-db-migration": "migrate under v1",
            "primary-process": "restart on v2",
        }
    )

    def prepare(self, site: BenchSite) -> None:
        site.stack.set_config({"currentVersion": TO_VERSION})

    def run(self, site: BenchSite, probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        with step(spans, "pulumi up"):
            site.stack.up()
        with step(spans, "verify"):
            site.verify_public(TO_VERSION)


@dataclass
class Smooth:
    """The driver's deployment, one `advance` at a time so that each phase's span (the check
    and config change before it, its update, the check after it) is known."""

    name: str = "smooth"
    title: str = "smooth (zdd deploy)"
    method: str = (
        "the driver's deployment v1 -> v2: clone, return (switches to the clone, drains, "
        "deploys, verifies, switches back), idle"
    )
    labels: Mapping[str, str] = field(default_factory=dict)
    result: DeployResult | None = None
    # When the probe's writes were paused for a stuck clone copy (epoch seconds), if they were.
    stalled: dict[str, float] = field(default_factory=dict)

    def prepare(self, site: BenchSite) -> None:
        self.result, _change = site.driver.begin(
            Action.DEPLOY, version=TO_VERSION, mode=Mode.READ_ONLY
        )

    def run(self, site: BenchSite, probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        result = self.result
        assert result is not None, "prepare first"
        watch = self._watch_clone(probe)
        pending: float | None = None
        more = True
        while more:
            started = time.time()
            before = len(result.phases)
            more = site.driver.advance(result)
            pending = started if pending is None else pending
            if len(result.phases) > before:
                name = result.phases[-1].name
                spans.append((name, pending, time.time()))
                say(f"  {name}: {time.time() - pending:.2f}s")
                pending = None
                if name == "clone":
                    watch.cancel()
                    if "write_every" in self.stalled:
                        probe.write_every = int(self.stalled["write_every"])
                        self.stalled["writes_resumed_at"] = time.time()
        result.outcome = "succeeded"

    def _watch_clone(self, probe: LoadProbe) -> threading.Timer:
        """A clone copy that never ends under writes is paused out of its loop.

        SQLite's online backup starts over whenever another connection writes to the source
        between two of its steps; on a large database under steady writes it may never finish.
        After `CLONE_STALL_SECONDS` the probe stops writing (reads go on) until the clone phase
        is done, and the results say so.
        """

        def pause() -> None:
            self.stalled["writes_paused_at"] = time.time()
            self.stalled["write_every"] = probe.write_every
            probe.write_every = 1 << 62  # no request number is a multiple: reads only
            say(f"  clone phase still running after {CLONE_STALL_SECONDS:.0f}s: writes paused")

        timer = threading.Timer(CLONE_STALL_SECONDS, pause)
        timer.daemon = True
        timer.start()
        return timer


def figures_of(measured: Measured, **extra: Any) -> dict[str, Any]:
    """The figures of one strategy's run: the probe's, its total and its steps."""
    return {
        **probe_figures(measured.samples, measured.report),
        "total_seconds": rounded(measured.total_seconds),
        "steps": [{"name": n, "seconds": rounded(e - s)} for n, s, e in measured.spans],
        **extra,
    }
