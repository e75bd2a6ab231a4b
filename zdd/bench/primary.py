"""What the primary itself needs to go to the new version, without any orchestration: its app
spec's migration on a copy of its database, its start command on that copy, and its health."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from zdd import health, processes
from zdd.appspec import AppSpec, Placement
from zdd.bench.load import probing
from zdd.bench.metrics import rounded
from zdd.bench.stacks import BenchSite
from zdd.phases import DatabaseMode, Instance
from zdd.processes import free_port
from zdd.sqlite_files import files_folder, remove_database

REPEATS = 3


def _placement(spec: AppSpec, version: str, database: Path, port: int) -> Placement:
    return Placement(
        version=version,
        release=spec.release(version),
        instance=str(Instance.PRIMARY),
        database_mode=DatabaseMode.READ_WRITE,
        database=str(database),
        files=str(files_folder(database)),
        port=port,
    )


def _once(spec: AppSpec, version: str, database: Path, scratch: Path) -> dict[str, float]:
    shutil.copyfile(database, scratch)
    placement = _placement(spec, version, scratch, free_port())
    release = Path(placement.release)
    log = scratch.with_suffix(".log")
    needs: dict[str, float] = {}
    started = time.perf_counter()
    if spec.migrate:
        done = subprocess.run(
            spec.migrate_command(placement), cwd=release, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"migration to {version} failed:\n{done.stdout}{done.stderr}")
    needs["migrate"] = time.perf_counter() - started
    started = time.perf_counter()
    owner = processes.owner_id(scratch.parent, "bench-needs")
    process = processes.start_detached(
        spec.start_command(placement), log, owner, spec.environment(placement), release
    )
    try:
        processes.wait_listening(process, placement.port, log)
        needs["start"] = time.perf_counter() - started
        started = time.perf_counter()
        health.wait_healthy(
            f"http://127.0.0.1:{placement.port}",
            health.Identity(version, Instance.PRIMARY, DatabaseMode.READ_WRITE),
            what="the scratch primary",
            health_path=spec.health.path,
        )
        needs["verify"] = time.perf_counter() - started
    finally:
        processes.stop(process.pid, owner)
        process.wait(timeout=20)
        remove_database(scratch)
        log.unlink(missing_ok=True)
    needs["total"] = sum(needs.values())
    return needs


def primary_needs(site: BenchSite, version: str, rate: float) -> dict[str, Any]:
    """The medians of `REPEATS` runs under the probe (`total` is the median total), with the
    smallest total and every run's total."""
    runs: list[dict[str, float]] = []
    scratch = site.folder / "bench-needs.sqlite"
    with probing(site.output("public_url"), site.probe_target, rate):
        time.sleep(1.0)
        for _ in range(REPEATS):
            runs.append(_once(site.app, version, site.primary_database, scratch))
    needs: dict[str, Any] = {
        key: rounded(statistics.median(run[key] for run in runs))
        for key in ("migrate", "start", "verify", "total")
    }
    needs["total_min"] = rounded(min(run["total"] for run in runs))
    needs["runs"] = [rounded(run["total"]) for run in runs]
    return needs
