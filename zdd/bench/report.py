"""The benchmark's report: the machine it ran on, the goals met or missed, the charts' panels,
and a summary on stderr."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from zdd.bench.engine import TimedStack, split_update
from zdd.bench.load import Measured, say
from zdd.bench.metrics import MIB
from zdd.chart import PhaseSpan, TimelineRun

# The read-only window's goal, against the time the primary itself needs to change.
WINDOW_OVER_NEEDS_GOAL = 2.0
COPY_OVER_RAW_GOAL = 0.5


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pulumi_sdk": installed_version("pulumi"),
    }
    for path, key, field in (
        ("/proc/cpuinfo", "cpu_model", "model name"),
        ("/proc/meminfo", "memory_gib", "MemTotal"),
    ):
        try:
            line = next(x for x in Path(path).read_text().splitlines() if x.startswith(field))
        except (OSError, StopIteration):
            continue
        value = line.split(":", 1)[1].strip()
        info[key] = round(int(value.split()[0]) / MIB, 1) if key == "memory_gib" else value
    try:
        cli = subprocess.run(["pulumi", "version"], capture_output=True, text=True, timeout=30)
        info["pulumi_cli"] = cli.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["pulumi_cli"] = None
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def goals(
    db_copy: Sequence[Mapping[str, Any]],
    windows: Sequence[Mapping[str, Any]],
    side_by_side: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "copy_at_least_half_raw_throughput": {
            "met": all(c["throughput_ratio"] >= COPY_OVER_RAW_GOAL for c in db_copy),
            "copy_throughput_over_raw_throughput": {
                c["size_mb"]: c["throughput_ratio"] for c in db_copy
            },
        },
        "read_only_window_at_most_2x_primary_needs": {
            "met": all(
                w["ratio"] is not None and w["ratio"] <= WINDOW_OVER_NEEDS_GOAL for w in windows
            ),
            "window_over_needs": {w["size_mb"]: w["ratio"] for w in windows},
        },
        "phase_within_raw_up_plus_gate_plus_allowance": {
            "met": side_by_side["all_within_goal"],
            "over_by": {
                p["phase"]: round(p["zdd"] - p["raw_up"] - p["gate"], 3)
                for p in side_by_side["phases"]
            },
        },
    }


def timeline(
    title: str,
    measured: Measured,
    figures: Mapping[str, Any],
    spans: Sequence[PhaseSpan] | None = None,
) -> TimelineRun:
    note = (
        f"{figures['requests']} requests, {figures['failed']} failed, "
        f"downtime {figures['downtime_seconds']:.1f}s, "
        f"writes unavailable {figures['write_unavailable_seconds']:.1f}s, "
        f"total {figures['total_seconds']:.1f}s"
    )
    phases = measured.spans if spans is None else spans
    return TimelineRun(title, measured.samples, measured.started_at, phases, note=note)


def chart_spans(
    measured: Measured, stack: TimedStack, labels: Mapping[str, str]
) -> list[PhaseSpan]:
    """The steps, with the one `pulumi up` among them cut into its resource steps."""
    up = stack.ups[-1] if stack.ups else None
    spans: list[PhaseSpan] = []
    for span in measured.spans:
        inside = up is not None and up.started >= span[1] - 0.01 and up.ended <= span[2] + 0.01
        spans += split_update(span, up, labels) if inside else [span]
    return spans


def print_summary(results: Mapping[str, Any]) -> None:
    for name, figures in results["strategies"].items():
        say(
            f"{name:12} requests {figures['requests']:6}  failed {figures['failed']:5}  "
            f"downtime {figures['downtime_seconds']:5.1f}s  "
            f"writes unavailable {figures['write_unavailable_seconds']:5.1f}s  "
            f"total {figures['total_seconds']:5.1f}s"
        )
    for copy, window in zip(results["db_copy"], results["read_only_window"], strict=True):
        say(
            f"{copy['size_mb']:g} MiB: online_backup {copy['copy_mb_per_s']} MiB/s vs copyfile "
            f"{copy['raw_copy_mb_per_s']} MiB/s; read-only window "
            f"{window['read_only_window_seconds']}s vs the primary's "
            f"{window['primary_needs_seconds']['total']}s"
        )
    held = [
        (name, f["writes_held"], f["longest_hold_seconds"], f["writes_refused"])
        for name, f in results["strategies"].items()
        if "writes_held" in f
    ]
    for name, count, longest, refused in held:
        say(f"{name:12} writes held {count} (longest {longest}s), refused {refused}")
    proof = results["proof"]
    say(
        f"{proof['size_mb']:g} MiB: copy {proof['copy_seconds']}s, restore point proof "
        f"{proof['proof_seconds']}s, read-only check {proof['check_seconds']}s (row by row: "
        f"{proof['row_by_row_digest_seconds']}s)"
    )
    side = results["side_by_side"]
    for row in side["phases"]:
        parts = ", ".join(f"{k} {row[k]:+.2f}" for k in ("gate", "config", "engine", "reads"))
        say(
            f"{row['phase']:8} by hand {row['raw_up']:.2f}s  zdd {row['zdd']:.2f}s  ({parts})"
            f"{'' if row['within_goal'] else '  OVER'}"
        )
    noop = side["noop_up"]
    say(f"no-op up: by hand {noop['raw']}s, Automation API {noop['automation_api']}s")
