"""`python -m zdd.bench` (`make bench`): smooth deployment against what people do today.

Three strategies ship v1 -> v2 of the sample site on fresh `local` stacks, each with the same
database (grown to the smallest of `BENCH_SIZES_MB` with filler rows) and the same load probe
(`BENCH_RATE` requests/s, default 300, one in ten a write) running from `LEAD_SECONDS` before the
first step until `LEAD_SECONDS` after the last:

- maintenance: the site is stopped (the primary process gets SIGTERM and finishes what it is
  serving; the front door answers 502 until v2 is up: for a visitor that is what a maintenance
  page's 503 is, a failed request), the database is migrated with the site's own migration
  command, then v2 is started with `pulumi up` (`zdd:currentVersion` = v2) and verified;
- in place: `zdd:currentVersion` = v2 and `pulumi up` on the idle stack, which migrates the
  database under the running v1 and then restarts the primary on v2; then verified;
- smooth: the driver's deployment v1 -> v2 (clone, cutover, deploy, return, idle).

The config change that starts each one is made before the clock starts, for all three.

Per strategy: `requests`, `failed`, `downtime_seconds` (the number of 100 ms buckets of probe
answers that hold a failed request, times 0.1 s; `downtime_seconds_1s` counts 1 s buckets),
`write_unavailable_seconds` (the same over writes that were refused or failed) and
`total_seconds` (first step to verified).

Scaling, for each size of `BENCH_SIZES_MB` (default "10,100"; MiB): a fresh stack's primary
database is grown to the size with rows of random bytes in a table of the bench's own (so the
migration does the same work at every size, and what grows is the copying), then the project's
`online_backup` is timed against `shutil.copyfile` of the same file (and, to show where the time
goes, variants of the same backup: see `time_copies`), the time the primary really needs
(migrate a copy, start v2 on it, verify it) is measured under the same probe, and a smooth
deployment is timed under the probe for its read-only window, with a profile of that window
(each update's resources from the engine's events, config writes, gates). A clone phase that
is still running after `CLONE_STALL_SECONDS` gets the probe's writes paused until it ends (see
`_watch_clone`); the results say when that happened.

Engine overhead: the wall time of each phase's `pulumi up` (through the Automation API) against
the wall time of a no-op `up` of the same stack, both under the probe.

Writes `bench/results.json`, `bench/timeline.png` (one panel per strategy) and
`bench/timeline-scaling.png` (the smooth deployment at each size). Every stack is destroyed and
every process it started is stopped at the end, also on failure.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, cast

from pulumi import automation as auto

from infra.local import processes
from infra.local.providers import online_backup, remove_database
from zdd import gates
from zdd.actions import Action
from zdd.chart import PhaseSpan, TimelineRun, write_timeline
from zdd.driver import DeployResult, Driver
from zdd.environment import Environment, find_project_root
from zdd.phases import DatabaseMode, Instance, Mode
from zdd.probe import LoadProbe, ProbeReport, Sample
from zdd.stack import Outcome, Stack

MIB = 1024 * 1024
RATE = float(os.environ.get("BENCH_RATE", "300"))
DEFAULT_SIZES_MB = "10,100"
LEAD_SECONDS = 2.0
BUCKET_SECONDS = 0.1
FILLER_TABLE = "bench_filler"
FILLER_ROW_BYTES = 2000
FILLER_BATCH_BYTES = 16 * MIB
COPY_REPEATS = 5
NOOP_REPEATS = 3
NEEDS_REPEATS = 3
# A clone phase that takes this long is stuck; see `_watch_clone`.
CLONE_STALL_SECONDS = 30.0
# Engine time between two resource steps shorter than this is not drawn on its own.
MIN_ENGINE_SPAN = 0.25
FROM_VERSION, TO_VERSION = "v1", "v2"


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench: {message}", file=sys.stderr, flush=True)


# -- pure helpers --------------------------------------------------------------------------


def bucketed_seconds(
    samples: Iterable[Sample], matches: Callable[[Sample], bool], bucket: float = BUCKET_SECONDS
) -> float:
    """Seconds covered by the `bucket`-second buckets (by answer time) holding a match."""
    # (the epsilon keeps an answer at exactly 6.1 s out of the bucket that ends there)
    buckets = {math.floor(s.at / bucket + 1e-9) for s in samples if matches(s)}
    return round(len(buckets) * bucket, 3)


def downtime_seconds(samples: Iterable[Sample], bucket: float = BUCKET_SECONDS) -> float:
    """Seconds with at least one failed request (refused writes are not failures)."""
    return bucketed_seconds(samples, lambda s: s.outcome == "failed", bucket)


def write_unavailable_seconds(samples: Iterable[Sample], bucket: float = BUCKET_SECONDS) -> float:
    """Seconds with at least one write that was refused or failed."""
    return bucketed_seconds(
        samples, lambda s: s.kind == "write" and s.outcome in ("refused", "failed"), bucket
    )


def span_of(samples: Iterable[Sample], matches: Callable[[Sample], bool]) -> float:
    """Seconds from the first to the last matching answer (0 if fewer than two)."""
    times = [s.at for s in samples if matches(s)]
    return max(times) - min(times) if times else 0.0


def rows_needed(target_bytes: float, current_bytes: float, bytes_per_row: float) -> int:
    """Filler rows of `bytes_per_row` (on disk) that bring a database from current to target."""
    if bytes_per_row <= 0:
        raise ValueError("bytes_per_row must be positive")
    return max(0, math.ceil((target_bytes - current_bytes) / bytes_per_row))


def parse_sizes(text: str) -> list[float]:
    """`"10,100"` -> [10.0, 100.0] (MiB), ascending, no duplicates."""
    sizes = sorted({float(part) for part in text.replace(" ", "").split(",") if part})
    if not sizes or sizes[0] <= 0:
        raise ValueError(f"BENCH_SIZES_MB {text!r}: expected positive numbers, e.g. 10,100")
    return sizes


def throughput_mb_s(size_bytes: float, seconds: float) -> float:
    return round(size_bytes / MIB / seconds, 1) if seconds > 0 else math.inf


def probe_figures(samples: Sequence[Sample], report: ProbeReport) -> dict[str, Any]:
    return {
        "requests": report.requests,
        "failed": report.failed,
        "downtime_seconds": downtime_seconds(samples),
        "write_unavailable_seconds": write_unavailable_seconds(samples),
        "downtime_seconds_1s": downtime_seconds(samples, 1.0),
        "write_unavailable_seconds_1s": write_unavailable_seconds(samples, 1.0),
        "writes_acknowledged": report.writes_acknowledged,
        "writes_refused": report.writes_refused,
        "writes_lost": report.writes_lost,
        "versions_served": report.versions_served,
        "probe_rate_achieved": round(report.rate_per_second, 1),
        "failures_first": report.failures[:5],
    }


def _r(value: float) -> float:
    return round(value, 3)


# -- timing the engine -------------------------------------------------------------------------


@dataclass
class ResourceStep:
    name: str
    op: str
    seconds: float
    outputs: dict[str, float] = field(default_factory=dict)
    # A resource a provider works on; components and providers only group or serve them.
    leaf: bool = True
    started: float = 0.0  # epoch seconds

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def _is_leaf(resource_type: str) -> bool:
    return resource_type.startswith("pulumi-python:dynamic") or not (
        resource_type.startswith(("zdd:", "pulumi:"))
    )


@dataclass
class UpRecord:
    label: str  # the phase the stack config asked for
    started: float  # epoch seconds, around the Automation API call
    ended: float
    engine_seconds: float  # what the engine reports for the update itself
    changes: dict[str, int]
    steps: list[ResourceStep]
    # Epoch seconds of engine events: "prelude" (the CLI has loaded the stack), "program" (the
    # program registered its first resource), "resources_done" (the last resource's outputs),
    # "summary" (the update is over); the Automation API then reads outputs and history.
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def stages(self) -> dict[str, float]:
        """Where the update's wall time went, from the event marks (about 0.1 s resolution)."""
        points = [("started", self.started)]
        points += [(k, self.marks[k]) for k in _MARKS if k in self.marks]
        points.append(("ended", self.ended))
        names = {
            "prelude": "cli_start_and_stack_load",
            "program": "language_host_and_program_start",
            "resources_done": "program_and_resources",
            "summary": "finish_and_state_write",
            "ended": "automation_api_outputs_and_history",
        }
        return {
            names[name]: _r(max(0.0, at - before))
            for (_, before), (name, at) in itertools.pairwise(points)
        }

    @property
    def work_seconds(self) -> float:
        """Time the providers spent on resources (they run one after the other here)."""
        return sum(s.seconds for s in self.steps if s.leaf)

    def resources_json(self) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "op": s.op, "seconds": _r(s.seconds), **s.outputs}
            for s in self.steps
            if s.leaf
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.label,
            "seconds": _r(self.seconds),
            "engine_seconds": _r(self.engine_seconds),
            "resources_seconds": _r(self.work_seconds),
            "stages": self.stages(),
            "changes": self.changes,
            "resources": self.resources_json(),
        }


_KEPT_OUTPUTS = ("copy_seconds", "size_bytes")
_MARKS = ("prelude", "program", "resources_done", "summary")


EventTap = Callable[[auto.EngineEvent], None]


class _TappedAutoStack(auto.Stack):
    """An Automation API stack whose `up` also hands every engine event to `tap`.

    `zdd.stack.Stack.up` passes its own `on_event`; this keeps it and adds ours.
    """

    tap: EventTap | None = None

    def up(self, *args: Any, **kwargs: Any) -> auto.UpResult:
        theirs: EventTap | None = kwargs.pop("on_event", None)
        tap = self.tap

        def both(event: auto.EngineEvent) -> None:
            if theirs is not None:
                theirs(event)
            if tap is not None:
                tap(event)

        kwargs["on_event"] = both
        return super().up(*args, **kwargs)


class TimedStack(Stack):
    """A `Stack` that records every `up` (wall time, and each changed resource's step time
    from the engine's events, which arrive within about 0.1 s) and every config write."""

    def __init__(self, env: Environment, name: str, stack: auto.Stack) -> None:
        stack.__class__ = _TappedAutoStack  # the same object, with the event tap
        super().__init__(env, name, stack)
        self._tapped = cast(_TappedAutoStack, stack)
        self.ups: list[UpRecord] = []
        self.config_writes: list[tuple[float, float]] = []

    def up(self, *args: Any, **kwargs: Any) -> Outcome:
        label = str(self.config().get("phase", "?"))
        begun: dict[str, tuple[float, str]] = {}
        steps: list[ResourceStep] = []
        marks: dict[str, float] = {}
        lock = threading.Lock()

        def on_event(event: auto.EngineEvent) -> None:
            now = time.time()
            pre, done = event.resource_pre_event, event.res_outputs_event
            if event.prelude_event is not None:
                marks.setdefault("prelude", now)
            elif pre is not None:
                marks.setdefault("program", now)
            elif done is not None:
                marks["resources_done"] = now
            elif event.summary_event is not None:
                marks["summary"] = now
            found = pre or done
            meta = found.metadata if found is not None else None
            if meta is None or meta.op in (auto.OpType.SAME, auto.OpType.READ):
                return
            with lock:
                if pre is not None:
                    begun[meta.urn] = (now, meta.op.value)
                elif meta.urn in begun:
                    started, op = begun.pop(meta.urn)
                    outputs = (meta.new.outputs if meta.new else None) or {}
                    kept = {
                        k: float(outputs[k])
                        for k in _KEPT_OUTPUTS
                        if isinstance(outputs.get(k), int | float)
                    }
                    name = meta.urn.split("::")[-1]
                    leaf = _is_leaf(meta.type)
                    steps.append(ResourceStep(name, op, now - started, kept, leaf, started))

        started = time.time()
        self._tapped.tap = on_event
        try:
            outcome = super().up(*args, **kwargs)
        finally:
            self._tapped.tap = None
        self.ups.append(
            UpRecord(label, started, time.time(), outcome.seconds, outcome.changes, steps, marks)
        )
        return outcome

    def set_config(self, values: Mapping[str, str | None]) -> None:
        started = time.time()
        super().set_config(values)
        self.config_writes.append((started, time.time()))


def _timed(driver: Driver) -> TimedStack:
    """Give `driver` a recording stack (after `init`, which makes the stack itself)."""
    stack = TimedStack.select(driver.env, driver.stack_name)
    assert isinstance(stack, TimedStack)  # `select` makes an instance of the class it is on
    driver._stack = stack
    return stack


# -- stacks and processes --------------------------------------------------------------------


def _stop_leftovers(state_dir: Path) -> list[int]:
    left = processes.find_matching(str(state_dir))
    for pid in left:
        processes.stop(pid, str(state_dir), timeout=5)
    return left


def _destroy(env: Environment, name: str, state_dir: Path) -> None:
    try:
        if Stack.exists(env, name):
            driver = Driver(env, name, say)
            try:
                driver.destroy()
            except Exception as exc:  # an interrupted update leaves a lock: clear it, retry
                say(f"destroy of {name} failed ({exc}); clearing the lock and retrying")
                driver.clear_interrupted_update()
                Driver(env, name, say).destroy()
    finally:
        left = _stop_leftovers(state_dir)
        if left:
            say(f"stopped {len(left)} process(es) of {name} that outlived its destroy: {left}")
        shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def fresh_stack(env: Environment, label: str) -> Iterator[tuple[Driver, TimedStack]]:
    """A new local stack on v1, idle; destroyed (and its processes stopped) on the way out."""
    name = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    state_dir = env.state_root / name
    driver = Driver(env, name, say)
    say(f"{name}: init at {FROM_VERSION}")
    try:
        driver.init("local", FROM_VERSION)
        yield driver, _timed(driver)
    finally:
        say(f"{name}: destroy")
        _destroy(env, name, state_dir)


def _state_dir(stack: Stack) -> Path:
    return Path(stack.config()["stateDir"])


def _primary_database(stack: Stack) -> Path:
    return _state_dir(stack) / str(stack.outputs()["primary_database"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the database --------------------------------------------------------------------------


def _database_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(page_size)


def grow_database(path: Path, size_mb: float) -> int:
    """Add filler rows (random bytes) to `path` until it holds `size_mb` MiB; returns bytes.

    Works on the live primary (WAL: its readers carry on); the WAL is checkpointed at the end
    so that the database file itself has the size.
    """
    target = size_mb * MIB
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {FILLER_TABLE} "
            "(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
        )
        conn.commit()
        per_row = FILLER_ROW_BYTES * 1.05
        while (size := _database_bytes(conn)) < target:
            count = min(rows_needed(target, size, per_row), FILLER_BATCH_BYTES // FILLER_ROW_BYTES)
            conn.execute(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
                f"INSERT INTO {FILLER_TABLE} (payload) SELECT randomblob(?) FROM n",
                (count, FILLER_ROW_BYTES),
            )
            conn.commit()
            grown = _database_bytes(conn) - size
            if grown > 0:
                per_row = grown / count
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return _database_bytes(conn)
    finally:
        conn.close()


def _backup(
    source: Path,
    destination: Path,
    *,
    pages: int = 4096,
    synchronous: str = "FULL",
    journal: str = "DELETE",
    mmap: bool = False,
    fsync: bool = False,
) -> None:
    """An online backup like `online_backup`, with the knobs the profile turns: the step size,
    the destination's `synchronous` and `journal_mode`, reading the source through mmap, one
    fsync of the finished file."""
    remove_database(destination)
    src, dst = sqlite3.connect(source, timeout=30), sqlite3.connect(destination)
    try:
        if mmap:
            src.execute(f"PRAGMA mmap_size={1 << 40}")
        dst.execute(f"PRAGMA journal_mode={journal}")
        dst.execute(f"PRAGMA synchronous={synchronous}")
        src.backup(dst, pages=pages)
    finally:
        src.close()
        dst.close()
    if fsync:
        fd = os.open(destination, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsynced_copy(source: Path, destination: Path) -> None:
    shutil.copyfile(source, destination)
    fd = os.open(destination, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def time_copies(path: Path, scratch: Path, repeats: int = COPY_REPEATS) -> dict[str, Any]:
    """Median seconds (interleaved repeats, on a quiet database) of the project's
    `online_backup` (`copy`), `shutil.copyfile` (`raw`: page cache, no fsync), copyfile plus one
    fsync, and two variants of the backup that show where its time goes. `throughput_ratio` is
    the copy's throughput over the plain copy's (the issue's target: at least 0.5)."""
    candidates: dict[str, Callable[[], object]] = {
        "copy": lambda: online_backup(path, scratch),
        "raw": lambda: shutil.copyfile(path, scratch),
        "raw_fsync": lambda: _fsynced_copy(path, scratch),
        "backup_sync_off": lambda: _backup(path, scratch, synchronous="OFF"),
        # One step (a single read transaction: never restarted by a writer), the source read
        # through mmap, no journal and no syncs on the fresh destination, one fsync at the end.
        "backup_one_step": lambda: _backup(
            path, scratch, pages=-1, synchronous="OFF", journal="OFF", mmap=True, fsync=True
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):  # interleaved, so that noise from other work hits all alike
        for name, copy in candidates.items():
            remove_database(scratch)
            started = time.perf_counter()
            copy()
            times[name].append(time.perf_counter() - started)
    remove_database(scratch)
    size = path.stat().st_size
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "bytes": size,
        "copy_seconds": _r(median["copy"]),
        "raw_copy_seconds": _r(median["raw"]),
        "raw_copy_fsync_seconds": _r(median["raw_fsync"]),
        "copy_synchronous_off_seconds": _r(median["backup_sync_off"]),
        "copy_mb_per_s": throughput_mb_s(size, median["copy"]),
        "raw_copy_mb_per_s": throughput_mb_s(size, median["raw"]),
        "throughput_ratio": _r(median["raw"] / median["copy"]),
        "copy_one_step_seconds": _r(median["backup_one_step"]),
        "one_step_throughput_ratio": _r(median["raw"] / median["backup_one_step"]),
        "runs": {name: [_r(v) for v in values] for name, values in times.items()},
    }


# -- the load probe --------------------------------------------------------------------------


@dataclass
class Measured:
    samples: list[Sample]
    started_at: float  # the probe's first request, epoch seconds
    began: float  # first step
    ended: float  # last step done
    spans: list[PhaseSpan]
    report: ProbeReport

    @property
    def total_seconds(self) -> float:
        return self.ended - self.began


@contextmanager
def probing(public_url: str) -> Iterator[LoadProbe]:
    probe = LoadProbe(public_url, rate=RATE)
    probe.start()
    try:
        deadline = time.monotonic() + 10
        while not probe.started_at and time.monotonic() < deadline:
            time.sleep(0.05)
        yield probe
    finally:
        probe.stop()


def measure(public_url: str, body: Callable[[LoadProbe, list[PhaseSpan]], None]) -> Measured:
    """Run `body` under the probe, with `LEAD_SECONDS` of steady load before and after."""
    spans: list[PhaseSpan] = []
    with probing(public_url) as probe:
        time.sleep(LEAD_SECONDS)
        began = time.time()
        try:
            body(probe, spans)
        finally:
            ended = time.time()
        time.sleep(LEAD_SECONDS)
    report = probe.report()
    return Measured(list(probe.samples), probe.started_at, began, ended, spans, report)


@contextmanager
def step(spans: list[PhaseSpan], name: str) -> Iterator[None]:
    started = time.time()
    try:
        yield
    finally:
        spans.append((name, started, time.time()))
        say(f"  {name}: {time.time() - started:.2f}s")


def _verify_public(stack: Stack, version: str) -> None:
    gates.wait_healthy(
        str(stack.outputs()["public_url"]),
        gates.Identity(version, Instance.PRIMARY, DatabaseMode.READ_WRITE),
        what=f"the site on {version}",
    )


def _migrate(database: Path, version: str) -> None:
    argv = [sys.executable, "-m", "sampleapp", "migrate", "--version", version]
    done = subprocess.run(
        [*argv, "--database", str(database)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"migration to {version} failed:\n{done.stdout}{done.stderr}")


def _stop_primary(stack: Stack) -> None:
    port = int(stack.config()["basePort"]) + 1
    database = str(_primary_database(stack))
    pids = [
        pid
        for pid in processes.find_matching(f"--port {port}")
        if processes.is_running(pid, database) and processes.is_running(pid, "serve")
    ]
    if not pids:
        raise RuntimeError(f"no primary process found on port {port}")
    for pid in pids:
        processes.stop(pid, database)


# -- the three strategies -----------------------------------------------------------------------


def split_update(
    span: PhaseSpan, up: UpRecord | None, labels: Mapping[str, str]
) -> list[PhaseSpan]:
    """A `pulumi up` span cut into the resource steps named in `labels` (resource name ->
    label) and the engine's time around them, for the chart."""
    name, start, end = span
    steps = sorted(
        (s for s in (up.steps if up else []) if s.name in labels), key=lambda s: s.started
    )
    if not steps:
        return [span]
    spans: list[PhaseSpan] = []
    at = start
    for item in steps:
        begin, finish = max(at, item.started), min(end, item.ended)
        if begin - at >= MIN_ENGINE_SPAN:
            spans.append((f"{name}: engine", at, begin))
        else:  # too short to draw: the step takes it
            begin = at
        spans.append((labels[item.name], begin, finish))
        at = finish
    if end - at >= MIN_ENGINE_SPAN:
        spans.append((f"{name}: engine", at, end))
    elif spans:
        spans[-1] = (spans[-1][0], spans[-1][1], end)
    return spans


def summarise(measured: Measured, **extra: Any) -> dict[str, Any]:
    return {
        **probe_figures(measured.samples, measured.report),
        "total_seconds": _r(measured.total_seconds),
        "steps": [{"name": n, "seconds": _r(e - s)} for n, s, e in measured.spans],
        **extra,
    }


def run_maintenance(env: Environment, size_mb: float) -> tuple[dict[str, Any], TimelineRun]:
    with fresh_stack(env, "maintenance") as (_driver, stack):
        size = grow_database(_primary_database(stack), size_mb)
        stack.set_config({"currentVersion": TO_VERSION})

        def body(_probe: LoadProbe, spans: list[PhaseSpan]) -> None:
            with step(spans, "stop"):
                _stop_primary(stack)
            with step(spans, "migrate"):
                _migrate(_primary_database(stack), TO_VERSION)
            with step(spans, "start v2"):
                stack.up()
            with step(spans, "verify"):
                _verify_public(stack, TO_VERSION)

        say("maintenance: stop the site, migrate, start v2 (pulumi up), under the probe")
        measured = measure(str(stack.outputs()["public_url"]), body)
    figures = summarise(
        measured,
        database_bytes=size,
        up_profile=[u.as_json() for u in stack.ups],
        method="primary process stopped (SIGTERM), `python -m sampleapp migrate`, then "
        "`pulumi up` with zdd:currentVersion=v2 starts v2; the front door answers 502 meanwhile",
    )
    labels = {"primary-db-migration": "migration check", "primary-process": "v2 starts"}
    spans = _chart_spans(measured, stack, labels)
    title = "maintenance page (stop, migrate, start v2)"
    return figures, _timeline(title, measured, figures, spans)


def run_in_place(env: Environment, size_mb: float) -> tuple[dict[str, Any], TimelineRun]:
    with fresh_stack(env, "inplace") as (_driver, stack):
        size = grow_database(_primary_database(stack), size_mb)
        stack.set_config({"currentVersion": TO_VERSION})

        def body(_probe: LoadProbe, spans: list[PhaseSpan]) -> None:
            with step(spans, "pulumi up"):
                stack.up()
            with step(spans, "verify"):
                _verify_public(stack, TO_VERSION)

        say("in place: pulumi up straight to v2 (migrate, restart), under the probe")
        measured = measure(str(stack.outputs()["public_url"]), body)
    figures = summarise(
        measured,
        database_bytes=size,
        up_profile=[u.as_json() for u in stack.ups],
        method="zdd:currentVersion=v2 on the idle stack and `pulumi up`: the migration runs "
        "under v1, then the primary restarts on v2",
    )
    labels = {"primary-db-migration": "migrate under v1", "primary-process": "restart on v2"}
    spans = _chart_spans(measured, stack, labels)
    return figures, _timeline("in place (pulumi up to v2)", measured, figures, spans)


def _watch_clone(probe: LoadProbe, stalled: dict[str, float]) -> threading.Timer:
    """A clone copy that never ends under writes is paused out of its loop.

    The copy's SQLite online backup starts over whenever another connection writes to the
    source between two of its steps; on a large database under steady writes it may never
    finish. After `CLONE_STALL_SECONDS` the probe stops writing (reads go on) until the clone
    phase is done, and the result says so.
    """

    def pause() -> None:
        stalled["writes_paused_at"] = time.time()
        stalled["write_every"] = probe.write_every
        probe.write_every = 1 << 62  # no request number is a multiple: reads only
        say(f"  clone phase still running after {CLONE_STALL_SECONDS:.0f}s: probe writes paused")

    timer = threading.Timer(CLONE_STALL_SECONDS, pause)
    timer.daemon = True
    timer.start()
    return timer


def deploy_smoothly(
    driver: Driver, stack: TimedStack
) -> tuple[Measured, DeployResult, dict[str, Any]]:
    """A driver deployment v1 -> v2 under the probe, one `advance` at a time so that each
    phase's span (the checks and config change before it, its update, the check after it) is
    known."""
    result, _change = driver.begin(Action.DEPLOY, version=TO_VERSION, mode=Mode.READ_ONLY)
    stalled: dict[str, float] = {}

    def body(probe: LoadProbe, spans: list[PhaseSpan]) -> None:
        watch = _watch_clone(probe, stalled)
        pending: float | None = None
        more = True
        while more:
            started = time.time()
            before = len(result.phases)
            more = driver.advance(result)
            pending = started if pending is None else pending
            if len(result.phases) > before:
                name = result.phases[-1].name
                spans.append((name, pending, time.time()))
                say(f"  {name}: {time.time() - pending:.2f}s")
                pending = None
                if name == "clone":
                    watch.cancel()
                    if "write_every" in stalled:
                        probe.write_every = int(stalled["write_every"])
                        stalled["writes_resumed_at"] = time.time()
        result.outcome = "succeeded"

    measured = measure(str(stack.outputs()["public_url"]), body)
    return measured, result, stalled


def _needs_once(database: Path, scratch: Path, log: Path) -> dict[str, float]:
    shutil.copyfile(database, scratch)
    port = _free_port()
    needs: dict[str, float] = {}
    started = time.perf_counter()
    _migrate(scratch, TO_VERSION)
    needs["migrate"] = time.perf_counter() - started
    argv = [sys.executable, "-m", "sampleapp", "serve", "--version", TO_VERSION]
    argv += ["--instance", "primary", "--database-mode", "ReadWrite"]
    argv += ["--database", str(scratch), "--port", str(port)]
    started = time.perf_counter()
    process = processes.start_detached(argv, log)
    try:
        processes.wait_listening(process, port, log)
        needs["start"] = time.perf_counter() - started
        started = time.perf_counter()
        gates.wait_healthy(
            f"http://127.0.0.1:{port}",
            gates.Identity(TO_VERSION, Instance.PRIMARY, DatabaseMode.READ_WRITE),
            what="the scratch primary",
        )
        needs["verify"] = time.perf_counter() - started
    finally:
        processes.stop(process.pid, str(scratch))
        process.wait(timeout=20)
        remove_database(scratch)
    needs["total"] = sum(needs.values())
    return needs


def primary_needs(stack: Stack, repeats: int = NEEDS_REPEATS) -> dict[str, Any]:
    """What the primary itself needs to go to v2, without any orchestration, on a copy of its
    database, under the probe: migrate, start v2 (listening), verify (`/healthz` says v2).

    The medians of `repeats` runs (`total` is the median total), with the smallest total and
    every run's total.
    """
    state_dir = _state_dir(stack)
    scratch = state_dir / "bench-needs.sqlite"
    log = state_dir / "bench-needs.log"
    runs: list[dict[str, float]] = []
    with probing(str(stack.outputs()["public_url"])):
        time.sleep(1.0)
        for _ in range(repeats):
            runs.append(_needs_once(_primary_database(stack), scratch, log))
    log.unlink(missing_ok=True)
    needs: dict[str, Any] = {
        key: _r(statistics.median(run[key] for run in runs))
        for key in ("migrate", "start", "verify", "total")
    }
    needs["total_min"] = _r(min(run["total"] for run in runs))
    needs["runs"] = [_r(run["total"]) for run in runs]
    return needs


def window_profile(
    window: tuple[float, float], stack: TimedStack, since: float
) -> list[dict[str, Any]]:
    """Where the read-only window goes: each update inside it (its resources, and the rest of
    it: engine and Automation API), config writes, and the rest (gates, driver, stack reads)."""
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
        profile.append(
            {
                "what": f"pulumi up ({up.label})",
                "seconds": _r(seconds),
                "resources": up.resources_json(),
                "engine_and_automation_api_seconds": _r(max(0.0, seconds - up.work_seconds)),
            }
        )
    config = sum(inside(s, e) for s, e in stack.config_writes if s >= since)
    accounted += config
    profile.append({"what": "stack config writes (pulumi config)", "seconds": _r(config)})
    profile.append(
        {"what": "gates, drain check, driver and stack reads", "seconds": _r(w1 - w0 - accounted)}
    )
    return profile


def run_size(
    env: Environment, size_mb: float, *, with_engine: bool
) -> tuple[dict[str, Any], dict[str, Any], Measured, DeployResult, dict[str, Any]]:
    """One size: grow, copy timings, the primary's needs, (engine no-ops), a smooth deployment.

    Returns the db_copy entry, the read-only window entry, the deployment's measurement and
    result, and the engine figures (empty unless `with_engine`).
    """
    with fresh_stack(env, f"smooth{int(size_mb)}") as (driver, stack):
        database = _primary_database(stack)
        say(f"{size_mb:g} MiB: growing the primary database")
        size = grow_database(database, size_mb)
        say(f"{size_mb:g} MiB: {size / MIB:.1f} MiB; timing online_backup against a file copy")
        copies = time_copies(database, _state_dir(stack) / "bench-copy.sqlite")
        say(
            f"  online_backup {copies['copy_seconds']}s, copyfile {copies['raw_copy_seconds']}s "
            f"(ratio {copies['throughput_ratio']})"
        )
        needs = primary_needs(stack)
        say(f"  the primary needs {needs}")
        engine: dict[str, Any] = {}
        if with_engine:
            engine = noop_ups(stack)
        since = time.time()
        say(f"{size_mb:g} MiB: smooth deployment {FROM_VERSION} -> {TO_VERSION} under the probe")
        measured, result, stalled = deploy_smoothly(driver, stack)
        phase_ups = [u for u in stack.ups if u.started >= since]
    clone_up = next((u for u in phase_ups if u.label == "clone"), None)
    clone_copy = next(
        (s for s in (clone_up.steps if clone_up else []) if s.name == "clone-db-file"), None
    )
    window = result.read_only_window_seconds or 0.0
    profile = window_profile(result.window, stack, since) if result.window else []
    db_copy = {
        "size_mb": size_mb,
        **copies,
        "clone_copy_seconds_in_deployment": (
            _r(clone_copy.outputs.get("copy_seconds", clone_copy.seconds)) if clone_copy else None
        ),
        "clone_copy_stalled_under_writes": bool(stalled),
    }
    ro_window = {
        "size_mb": size_mb,
        "read_only_window_seconds": _r(window),
        "primary_needs_seconds": needs,
        "ratio": _r(window / needs["total"]) if needs["total"] else None,
        # What visitors saw: from the first to the last answer that came from the clone.
        "observed_on_clone_seconds": _r(span_of(measured.samples, lambda s: s.origin == "clone")),
        "phases": [{"name": p.name, "seconds": _r(p.seconds)} for p in result.phases],
        "window_profile": profile,
        "probe": probe_figures(measured.samples, measured.report),
        "clone_writes_paused": (
            {k: _r(v - measured.started_at) for k, v in stalled.items() if k.endswith("_at")}
            if stalled
            else None
        ),
    }
    if with_engine:
        engine["phase_up_seconds"] = {u.label: _r(u.seconds) for u in phase_ups}
        engine["phase_up_engine_seconds"] = {u.label: _r(u.engine_seconds) for u in phase_ups}
        engine["phase_up_resources_seconds"] = {u.label: _r(u.work_seconds) for u in phase_ups}
        total_up = sum(u.seconds for u in phase_ups)
        total_work = sum(u.work_seconds for u in phase_ups)
        # Share of the phases' update time not spent by providers on resources.
        engine["orchestration_share"] = _r(1 - total_work / total_up) if total_up else None
        # The same estimated from the no-op update: (phases x no-op) / phases' update time.
        engine["orchestration_share_from_noop"] = (
            _r(min(1.0, len(phase_ups) * engine["noop_up_seconds"] / total_up))
            if total_up
            else None
        )
        engine["phase_ups"] = [u.as_json() for u in phase_ups]
    return db_copy, ro_window, measured, result, engine


def noop_ups(stack: TimedStack) -> dict[str, Any]:
    """`pulumi up` with nothing to change, unloaded and under the probe."""
    say("engine: no-op ups (no config change)")
    quiet_from = len(stack.ups)
    for _ in range(NOOP_REPEATS - 1):
        stack.up()
    loaded_from = len(stack.ups)
    with probing(str(stack.outputs()["public_url"])):
        time.sleep(1.0)
        for _ in range(NOOP_REPEATS):
            stack.up()
    quiet = stack.ups[quiet_from:loaded_from]
    loaded = stack.ups[loaded_from:]
    changed = [u.changes for u in (*quiet, *loaded) if set(u.changes) - {"same", "read"}]
    if changed:
        raise RuntimeError(f"a no-op up changed something: {changed}")
    return {
        "noop_up_seconds": _r(statistics.median(u.seconds for u in loaded)),
        "noop_up_seconds_min": _r(min(u.seconds for u in (*quiet, *loaded))),
        "noop_up_seconds_unloaded": _r(statistics.median(u.seconds for u in quiet)),
        "noop_up_engine_seconds": _r(statistics.median(u.engine_seconds for u in loaded)),
        "noop_up_runs": [_r(u.seconds) for u in loaded],
    }


# -- report -----------------------------------------------------------------------------------


def _timeline(
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


def _chart_spans(
    measured: Measured, stack: TimedStack, labels: Mapping[str, str]
) -> list[PhaseSpan]:
    """The steps, with the one `pulumi up` among them cut into its resource steps."""
    up = stack.ups[-1] if stack.ups else None
    spans: list[PhaseSpan] = []
    for span in measured.spans:
        inside = up is not None and up.started >= span[1] - 0.01 and up.ended <= span[2] + 0.01
        spans += split_update(span, up, labels) if inside else [span]
    return spans


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pulumi_sdk": installed_version("pulumi"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / MIB, 1)
                break
    except OSError:
        pass
    try:
        cli = subprocess.run(["pulumi", "version"], capture_output=True, text=True, timeout=30)
        info["pulumi_cli"] = cli.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["pulumi_cli"] = None
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def targets(db_copy: list[dict[str, Any]], windows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "copy_at_least_half_raw_throughput": {
            "met": all(c["throughput_ratio"] >= 0.5 for c in db_copy),
            "copy_throughput_over_raw_throughput": {
                c["size_mb"]: c["throughput_ratio"] for c in db_copy
            },
        },
        "read_only_window_at_most_1_5x_primary_needs": {
            "met": all(w["ratio"] is not None and w["ratio"] <= 1.5 for w in windows),
            "window_over_needs": {w["size_mb"]: w["ratio"] for w in windows},
        },
    }


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

    strategies: dict[str, Any] = {}
    panels: list[TimelineRun] = []
    for name, run_baseline in (("maintenance", run_maintenance), ("in_place", run_in_place)):
        figures, panel = run_baseline(env, sizes[0])
        strategies[name] = figures
        panels.append(panel)

    db_copy: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    scaling_panels: list[TimelineRun] = []
    engine: dict[str, Any] = {}
    for index, size_mb in enumerate(sizes):
        copy, window, measured, result, size_engine = run_size(env, size_mb, with_engine=index == 0)
        db_copy.append(copy)
        windows.append(window)
        figures = summarise(
            measured,
            database_bytes=copy["bytes"],
            read_only_window_seconds=window["read_only_window_seconds"],
            phases=window["phases"],
        )
        run = _timeline(f"smooth ({size_mb:g} MiB)", measured, figures)
        run.window = result.window
        paused = window["clone_writes_paused"]
        if paused:
            start = measured.started_at + paused["writes_paused_at"]
            end = measured.started_at + paused.get("writes_resumed_at", paused["writes_paused_at"])
            run.brackets = [("writes paused (clone copy stuck)", start, end)]
        scaling_panels.append(run)
        if index == 0:
            engine = size_engine
            strategies["smooth"] = figures
            panels.append(
                TimelineRun(
                    "smooth (zdd deploy)",
                    run.samples,
                    run.started_at,
                    run.phases,
                    note=run.note,
                    window=run.window,
                )
            )

    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {
        "machine": info,
        "strategies": strategies,
        "db_copy": db_copy,
        "engine": engine,
        "read_only_window": windows,
        "targets": targets(db_copy, windows),
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
        "duration_seconds": _r(time.time() - started),
        "notes": [
            "downtime_seconds: 100 ms buckets (by answer time) that hold a failed request; "
            "write_unavailable_seconds: the same over refused or failed writes; *_1s: 1 s buckets",
            "maintenance: the primary process is stopped and the front door answers 502 until v2 "
            "is up; a maintenance page would answer 503: a failed request all the same",
            "sizes are MiB of filler rows in a table of the bench's own; the v2 migration only "
            "touches articles, so what grows with the size is the copying",
            "copy timings run on a quiet database; raw_copy_seconds is shutil.copyfile (page "
            "cache, no fsync), raw_copy_fsync_seconds adds one fsync; throughput_ratio is the "
            "copy's throughput over raw_copy's; copy_one_step_seconds is the same online backup "
            "in one step (pages=-1), the source read through mmap, no journal and no syncs on "
            "the new file, then one fsync",
            "read_only_window_seconds is the driver's (from before the cutover update to after "
            "the return update); observed_on_clone_seconds is what the probe saw: first to last "
            "answer served by the clone",
            "other work may share the 2 cores (see the load averages): figures are noisy",
        ],
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
    _print_summary(results)


def _print_summary(results: Mapping[str, Any]) -> None:
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
    engine = results["engine"]
    say(f"engine: no-op up {engine.get('noop_up_seconds')}s")
    say(f"engine: phase ups {engine.get('phase_up_seconds')}")


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)  # clean up the stacks on `kill` as on Ctrl-C
    main()
