"""`python -m zdd.bench` (`make bench`): runs every section and writes the results and charts."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

from zdd.bench import frontdoor, paths, pgcopy, proof
from zdd.bench.database import grow_database
from zdd.bench.load import LEAD_SECONDS, say
from zdd.bench.metrics import BUCKET_SECONDS, parse_sizes, rounded
from zdd.bench.report import chart_spans, goals, machine, print_summary, timeline
from zdd.bench.scaling import run_size
from zdd.bench.sidebyside import side_by_side
from zdd.bench.stacks import FROM_VERSION, TO_VERSION, fresh_stack
from zdd.bench.strategies import InPlace, Maintenance, figures_of, measure_strategy
from zdd.chart import TimelineRun, write_timeline
from zdd.environment import Environment, find_project_root
from zdd.processes import free_port

RATE = float(os.environ.get("BENCH_RATE", "300"))
DEFAULT_SIZES_MB = "10,100"
PROOF_SIZE_MB = float(os.environ.get("BENCH_PROOF_MB", "1024"))
NOTES = [
    "downtime_seconds: 100 ms buckets (by answer time) that hold a failed request; "
    "write_unavailable_seconds: the same over refused or failed writes; *_1s: 1 s buckets",
    "maintenance: the primary process is stopped and the front door answers 503 until v2 is up, "
    "as a maintenance page would",
    "sizes are MiB of filler rows in a table of the bench's own; the v2 migration only touches "
    "articles, so what grows with the size is the copying",
    "copy timings run on a quiet database; raw_copy_seconds is shutil.copyfile (page cache, no "
    "fsync), raw_copy_fsync_seconds adds one fsync; throughput_ratio is the copy's throughput "
    "over raw_copy's; copy_one_step_seconds is the same online backup in one step (pages=-1), "
    "the source read through mmap, no journal and no syncs on the new file, then one fsync",
    "read_only_window_seconds is the driver's (from the front door's switch to the clone to its "
    "switch back, as the engine reported them); observed_on_clone_seconds is what the probe "
    "saw: first to last answer served by the clone",
    "side_by_side runs without the probe; its gate part is the driver's time outside calls on "
    "its stack (its checks), engine is the driver's pulumi up minus the raw one",
    "additive_release: the same additive release (v1 -> v1.1) on a fresh stack per path; the "
    "compatible path's total includes its rehearsal, as `zdd deploy --strategy auto` runs it",
    "postgresql: at BENCH_PROOF_MB, one run each on one pgbench database, in order: the "
    "clone's copy (pg_basebackup --no-sync and the start of its hot standby), its digest, then "
    "the restore point (pg_basebackup, the server's manifest as its proof), the raw "
    "pg_basebackup and PITR's named point archived, beside each other, then a manifest with "
    "SHA-256 checksums, a rollback's restore and the other raw tools with their defaults; "
    "over_best_raw is ours over the fastest raw tool for that job",
    "other work may share the cores (see the load averages): figures are noisy",
]


def _strategies(env: Environment, size_mb: float) -> tuple[dict[str, Any], list[TimelineRun]]:
    """The maintenance page and the in-place update, each on a fresh stack of `size_mb`."""
    strategies: dict[str, Any] = {}
    panels: list[TimelineRun] = []
    for strategy in (Maintenance(), InPlace()):
        with fresh_stack(env, strategy.name.replace("_", "")) as site:
            size = grow_database(site.primary_database, size_mb)
            measured = measure_strategy(site, strategy, RATE)
            ups = [u.as_json() for u in site.stack.ups]
            spans = chart_spans(measured, site.stack, strategy.labels)
        figures = figures_of(measured, database_bytes=size, up_profile=ups, method=strategy.method)
        strategies[strategy.name] = figures
        panels.append(timeline(strategy.title, measured, figures, spans))
    return strategies, panels


def _scaling(
    env: Environment, sizes: list[float], strategies: dict[str, Any], panels: list[TimelineRun]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[TimelineRun]]:
    """The smooth deployment at each size: its copy, its read-only window and its chart; the
    first size's run is also the `smooth` strategy beside the other two."""
    db_copy: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    scaling_panels: list[TimelineRun] = []
    for size_mb in sizes:
        run = run_size(env, size_mb, RATE)
        db_copy.append(run.db_copy)
        windows.append(run.read_only_window)
        window = run.read_only_window
        figures = figures_of(
            run.measured,
            database_bytes=run.db_copy["bytes"],
            read_only_window_seconds=window["read_only_window_seconds"],
            phases=window["phases"],
        )
        panel = timeline(f"smooth ({size_mb:g} MiB)", run.measured, figures)
        panel.window = run.smooth.result.window if run.smooth.result else None
        paused = window["clone_writes_paused"]
        if paused:
            start = run.measured.started_at + paused["writes_paused_at"]
            end = run.measured.started_at + paused.get(
                "writes_resumed_at", paused["writes_paused_at"]
            )
            panel.brackets = [("writes paused (clone copy stuck)", start, end)]
        scaling_panels.append(panel)
        if size_mb == sizes[0]:
            strategies["smooth"] = figures
            panels.append(
                TimelineRun(
                    "smooth (zdd deploy)",
                    panel.samples,
                    panel.started_at,
                    panel.phases,
                    note=panel.note,
                    window=panel.window,
                )
            )

    return db_copy, windows, scaling_panels


def main() -> None:
    env = Environment(find_project_root())
    env.apply()
    os.chdir(env.root)
    sizes = parse_sizes(os.environ.get("BENCH_SIZES_MB", DEFAULT_SIZES_MB))
    out_dir = env.root / "bench"
    out_dir.mkdir(exist_ok=True)
    started = time.time()
    info = machine()
    say(f"sizes {sizes} MiB, probe {RATE:.0f} requests/s, {info.get('cpu_count')} cores")

    side = side_by_side(env)
    strategies, panels = _strategies(env, sizes[0])
    db_copy, windows, scaling_panels = _scaling(env, sizes, strategies, panels)

    additive = paths.figures(env, RATE, sizes[0])

    front_door = frontdoor.figures(lambda: fresh_stack(env, "frontdoor"), free_port, say)
    proof_figures = proof.figures(PROOF_SIZE_MB, say)
    postgresql_figures = pgcopy.figures(PROOF_SIZE_MB, say)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {
        "machine": info,
        "side_by_side": side,
        "strategies": strategies,
        "additive_release": additive,
        "db_copy": db_copy,
        "read_only_window": windows,
        "goals": goals(db_copy, windows, side),
        "front_door": front_door,
        "proof": proof_figures,
        "postgresql": postgresql_figures,
        "settings": {
            "probe_rate_per_second": RATE,
            "probe_write_every": 10,
            "bucket_seconds": BUCKET_SECONDS,
            "lead_seconds": LEAD_SECONDS,
            "sizes_mb": sizes,
            "strategy_database_mb": sizes[0],
            "from_version": FROM_VERSION,
            "to_version": TO_VERSION,
        },
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": rounded(time.time() - started),
        "notes": NOTES,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_timeline(
        out_dir / "timeline.png",
        panels,
        title=f"v1 -> v2 under {RATE:.0f} requests/s, database {sizes[0]:g} MiB",
    )
    write_timeline(
        out_dir / "timeline-scaling.png",
        scaling_panels,
        title=f"smooth deployment v1 -> v2 by database size, under {RATE:.0f} requests/s",
    )
    say(f"wrote {out_dir / 'results.json'} and the charts in {time.time() - started:.0f}s")
    print_summary(results)
    for line in paths.summary(additive):
        say(line)
    for line in pgcopy.summary(postgresql_figures):
        say(line)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)  # clean up the stacks on `kill` as on Ctrl-C
    main()
