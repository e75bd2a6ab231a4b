"""The clone path and the compatible path side by side, for the same additive release (v1 ->
v1.1) on the same database size, under the same probe: what a visitor's writes go through, how
long it all takes, and what the rehearsal that proves the release compatible costs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from zdd import rehearsal
from zdd.actions import Action
from zdd.bench.database import grow_database
from zdd.bench.load import Measured, measure, say, step
from zdd.bench.metrics import rounded
from zdd.bench.stacks import BenchSite, fresh_stack
from zdd.bench.strategies import figures_of
from zdd.chart import PhaseSpan
from zdd.environment import Environment
from zdd.phases import Strategy
from zdd.probe import LoadProbe
from zdd.results import DeployResult

# The sample's additive release: v1 runs on its schema, so a rehearsal finds it compatible.
ADDITIVE_VERSION = "v1.1"


@dataclass
class PathRun:
    """One deployment of the additive release along `strategy`, the rehearsal first where the
    compatible path needs it (as `zdd deploy --strategy auto` runs it)."""

    strategy: Strategy
    result: DeployResult | None = None
    report: rehearsal.RehearsalReport | None = None

    def run(self, site: BenchSite, _probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        if self.strategy is Strategy.COMPATIBLE:
            with step(spans, "rehearsal"):
                self.report = site.driver.rehearsal(ADDITIVE_VERSION).run(say)
            if not self.report.compatible:
                raise RuntimeError(f"the additive release failed its rehearsal: {self.report}")
        with step(spans, "deployment"):
            self.result, _ = site.driver.begin(
                Action.DEPLOY, version=ADDITIVE_VERSION, strategy=self.strategy
            )
            site.driver.run(self.result)


def figures(env: Environment, rate: float, size_mb: float) -> dict[str, Any]:
    """Each path on a fresh stack of `size_mb` MiB: the probe's figures and the total, and for
    the compatible path the rehearsal's cost (inside its total)."""
    paths: dict[str, Any] = {}
    for strategy in (Strategy.CLONE, Strategy.COMPATIBLE):
        with fresh_stack(env, f"path{strategy}") as site:
            size = grow_database(site.primary_database, size_mb)
            path = PathRun(strategy)
            say(f"{strategy} path: v1 -> {ADDITIVE_VERSION}, {size_mb:g} MiB")
            measured = measure(
                site.output("public_url"), site.probe_target, rate, partial(path.run, site)
            )
        paths[str(strategy)] = _figures(measured, path, size)
    return {"version": ADDITIVE_VERSION, "size_mb": size_mb, "paths": paths}


def _figures(measured: Measured, path: PathRun, size: int) -> dict[str, Any]:
    result = path.result
    window = result.read_only_window_seconds if result else None
    found = figures_of(
        measured,
        database_bytes=size,
        read_only_window_seconds=rounded(window) if window is not None else None,
        phases=[{"name": p.name, "seconds": rounded(p.seconds)} for p in result.phases]
        if result
        else [],
    )
    report = path.report
    if report is not None:
        found["rehearsal"] = {
            "seconds": rounded(report.seconds),
            "copy_seconds": rounded(report.copy_seconds),
            "migration_seconds": rounded(report.migration_seconds),
            "copy_rows": report.copy_rows,
            "copy_bytes": report.copy_bytes,
        }
    return found


def summary(section: dict[str, Any]) -> list[str]:
    """One line per path, as `make bench` prints them."""
    lines = []
    for name, f in section["paths"].items():
        cost = f" (rehearsal {f['rehearsal']['seconds']}s)" if "rehearsal" in f else ""
        lines.append(
            f"{name:10} {section['version']}: writes refused {f['writes_refused']}, held "
            f"{f['writes_held']}, longest write {f['longest_write_seconds']}s, read-only window "
            f"{f['read_only_window_seconds']}s, total {f['total_seconds']}s{cost}"
        )
    return lines
