"""The smooth deployment at each database size: the copy's speed, the primary's own needs, and
the read-only window against them, with a profile of where the window goes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from zdd.bench.database import grow_database, time_copies
from zdd.bench.engine import TimedStack
from zdd.bench.load import Measured, say
from zdd.bench.metrics import MIB, probe_figures, rounded, span_of
from zdd.bench.primary import primary_needs
from zdd.bench.stacks import FROM_VERSION, TO_VERSION, fresh_stack
from zdd.bench.strategies import Smooth, measure_strategy
from zdd.environment import Environment


@dataclass
class SizeRun:
    db_copy: dict[str, Any]
    read_only_window: dict[str, Any]
    measured: Measured
    smooth: Smooth


def window_profile(
    window: tuple[float, float], stack: TimedStack, since: float
) -> list[dict[str, Any]]:
    """Where the read-only window goes: each update inside it (its resources, and the rest of
    it: the engine), config reads and writes, and the rest (gates, driver, stack reads)."""
    w0, w1 = window

    def inside(start: float, end: float) -> float:
        return max(0.0, min(end, w1) - max(start, w0))

    profile: list[dict[str, Any]] = []
    accounted = 0.0
    for up in (u for u in stack.ups if u.started >= since):
        seconds = inside(up.started, up.ended)
        if seconds <= 0:
            continue
        accounted += seconds
        # The resources' time inside the window only: an update's first step (the switch to the
        # clone) begins before it.
        work = sum(inside(step.started, step.ended) for step in up.steps if step.leaf)
        profile.append(
            {
                "what": f"pulumi up ({up.label})",
                "seconds": rounded(seconds),
                "resources": up.resources_json(),
                "engine_seconds": rounded(max(0.0, seconds - work)),
            }
        )
    config = sum(
        inside(c.started, c.ended) for c in stack.calls if c.kind == "config" and c.started >= since
    )
    accounted += config
    profile.append({"what": "stack config reads and writes", "seconds": rounded(config)})
    rest = rounded(w1 - w0 - accounted)
    profile.append({"what": "gates, drain check, driver and stack reads", "seconds": rest})
    return profile


def run_size(env: Environment, size_mb: float, rate: float) -> SizeRun:
    """One size: grow the database, time its copies, the primary's needs, a smooth deployment."""
    with fresh_stack(env, f"smooth{int(size_mb)}") as site:
        say(f"{size_mb:g} MiB: growing the primary database")
        size = grow_database(site.primary_database, size_mb)
        say(f"{size_mb:g} MiB: {size / MIB:.1f} MiB; timing online_backup against a file copy")
        copies = time_copies(site.primary_database, site.folder / "bench-copy.sqlite")
        say(
            f"  online_backup {copies['copy_seconds']}s, copyfile {copies['raw_copy_seconds']}s "
            f"(ratio {copies['throughput_ratio']})"
        )
        needs = primary_needs(site, TO_VERSION, rate)
        say(f"  the primary needs {needs}")
        since = time.time()
        say(f"{size_mb:g} MiB: smooth deployment {FROM_VERSION} -> {TO_VERSION} under the probe")
        smooth = Smooth()
        measured = measure_strategy(site, smooth, rate)
        stack = site.stack
    result = smooth.result
    assert result is not None
    phase_ups = [u for u in stack.ups if u.started >= since]
    clone_up = next((u for u in phase_ups if u.label == "clone"), None)
    clone_copy = next(
        (s for s in (clone_up.steps if clone_up else []) if s.name == "clone-db-file"), None
    )
    window = result.read_only_window_seconds or 0.0
    db_copy = {
        "size_mb": size_mb,
        **copies,
        "clone_copy_seconds_in_deployment": (
            rounded(clone_copy.outputs.get("copy_seconds", clone_copy.seconds))
            if clone_copy
            else None
        ),
        "clone_copy_stalled_under_writes": bool(smooth.stalled),
    }
    stalled = smooth.stalled
    ro_window = {
        "size_mb": size_mb,
        "read_only_window_seconds": rounded(window),
        "primary_needs_seconds": needs,
        "ratio": rounded(window / needs["total"]) if needs["total"] else None,
        # What visitors saw: from the first to the last answer that came from the clone.
        "observed_on_clone_seconds": rounded(
            span_of(measured.samples, lambda s: s.origin == "clone")
        ),
        "phases": [{"name": p.name, "seconds": rounded(p.seconds)} for p in result.phases],
        "window_profile": window_profile(result.window, stack, since) if result.window else [],
        "phase_ups": [u.as_json() for u in phase_ups],
        "probe": probe_figures(measured.samples, measured.report),
        "clone_writes_paused": (
            {k: rounded(v - measured.started_at) for k, v in stalled.items() if k.endswith("_at")}
            if stalled
            else None
        ),
    }
    return SizeRun(db_copy, ro_window, measured, smooth)
