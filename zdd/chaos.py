"""`make chaos`: smooth deployments under load, each with one of the stack's processes killed.

Each run makes a fresh local stack on v1, starts the load probe on its public address, and
deploys v2 with the `zdd` command in a process of its own. At a random moment one process of the
stack is SIGKILLed: the front door, the primary, the clone, an engine plugin, the Pulumi CLI or
the driver itself. Then `zdd resume` (and `zdd complete` where the deployment awaits approval)
takes the stack to its end, as an operator would. Each run reports its outcome, the failed
requests and the seconds they spanned (allowed only while the public front door itself is down),
and the acknowledged writes that are no longer served (never allowed).

On PostgreSQL (`--database postgresql`, or `mixed`: every other run; `CHAOS_DATABASE`) the sample
site runs on the stack's own cluster, and the victim may also be the database server itself
(its postmaster), killed in each phase in turn. Requests fail while it is down (until it takes
connections again after its crash recovery, and a moment for the sites to reconnect); those are
counted apart, and an acknowledged write lost is never allowed.

`python -m zdd.chaos [--runs N] [--seed S] [--database sqlite|postgresql|mixed]`; writes
`bench/chaos.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from zdd import postgres, processes
from zdd.config_file import StackConfigFile
from zdd.console import stderr_console
from zdd.environment import (
    SAMPLE_FROM_VERSION,
    SAMPLE_TO_VERSION,
    Environment,
    LoggedComponent,
    find_project_root,
)
from zdd.probe import LoadProbe, ProbeTarget, Sample

VICTIMS = ("front door", "primary", "clone", "provider plugin", "cli", "driver")
DATABASE_SERVER = "database server"  # PostgreSQL runs only
ALL_VICTIMS = (*VICTIMS, DATABASE_SERVER)
DATABASES = ("sqlite", "postgresql", "mixed")
# The phases the database server is killed in, in turn (the configured phase at the kill): a
# deployment that asks for no approval goes from `clone` straight to `return`.
SERVER_KILL_PHASES = ("clone", "return", "idle")
# On PostgreSQL, the share of runs whose victim is the database server.
SERVER_KILL_SHARE = 0.5
# Sites reconnect to a server that came back at their next request; what failed this long
# after it took connections again still counts as the server's downtime.
RECONNECT_SECONDS = 2.0
RESUMES = 3  # a resume may itself be interrupted by what the kill left behind
say = stderr_console().print


@dataclass
class ChaosRun:
    run: int
    victim: str
    database: str = "sqlite"
    killed_pid: int | None = None
    killed_in_phase: str | None = None
    killed_after_seconds: float | None = None
    outcome: str = "unknown"
    final_version: str | None = None
    requests: int = 0
    failed: int = 0
    failed_seconds: float = 0.0
    failed_while_front_door_down: int = 0
    # From the kill of the front door until it took connections again.
    front_door_down_seconds: float | None = None
    # PostgreSQL: the phase the server was to be killed in, and from its kill until it took
    # connections again; the requests that failed meanwhile.
    server_kill_phase: str | None = None
    database_down_seconds: float | None = None
    failed_while_database_down: int = 0
    writes_acknowledged: int = 0
    writes_lost: int = 0
    processes_left: int = 0
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    # The first failed requests, in seconds from the kill, and the driver's own output.
    failures: list[str] = field(default_factory=list)
    log: str | None = None

    @property
    def clean(self) -> bool:
        unexplained = (
            self.failed - self.failed_while_front_door_down - self.failed_while_database_down
        )
        return (
            self.outcome == "idle"
            and self.writes_lost == 0
            and unexplained == 0
            and self.processes_left == 0
        )


class Zdd:
    """The `zdd` command, run as a user would, with the project's engine environment."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.variables = {**os.environ, **env.engine_env()}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "zdd.cli", *args, "--json"]

    def __call__(self, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            self.argv(*args),
            cwd=self.env.root,
            env=self.variables,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        try:
            document: dict[str, Any] = json.loads(done.stdout or "{}")
        except json.JSONDecodeError:
            document = {"error": done.stdout[-500:] + done.stderr[-500:]}
        return done.returncode, document

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as output:
            return subprocess.Popen(
                self.argv(*args),
                cwd=self.env.root,
                env=self.variables,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> Iterator[int]:
    tree = _children()
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        yield child
        stack.extend(tree.get(child, []))


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _victim_pid(victim: str, stack_dir: Path, driver: subprocess.Popen[str]) -> int | None:
    """The one process to kill, if it runs now (the clone exists only mid-deployment, the CLI
    and its plugins only during an update)."""
    if victim == "driver":
        return driver.pid
    if victim == DATABASE_SERVER:
        # The postmaster, as its own pid file in the stack's folder names it (it runs as the
        # server's OS user, out of reach of owner ids); alive, not a stale file's pid.
        pid = postgres.postmaster_pid(postgres.data_dir(stack_dir))
        return pid if pid is not None and Path(f"/proc/{pid}").exists() else None
    roles = {"front door": LoggedComponent.FRONTDOOR, "primary": "primary", "clone": "clone"}
    if victim in roles:
        owned = set(processes.find_owned(processes.owner_id(stack_dir, roles[victim])))
        # The server itself, not its supervisor (which would only leave it running) nor its
        # workers (its children).
        servers = {pid for pid in owned if processes.SUPERVISOR_MODULE not in _command_line(pid)}
        tree = _children()
        tops = [pid for pid in servers if not any(pid in tree.get(p, []) for p in servers)]
        return min(tops) if tops else None
    wanted: Callable[[str], bool] = (
        (lambda line: "pulumi.dynamic" in line)
        if victim == "provider plugin"
        else (lambda line: Path(line.split(" ", 1)[0]).name == "pulumi")
    )
    found = [pid for pid in _descendants(driver.pid) if wanted(_command_line(pid))]
    return min(found) if found else None


def _configured_phase(env: Environment, stack: str) -> str | None:
    return StackConfigFile(env.root, stack).values(strict=False).get("phase")


# Clients still hold keep-alive connections to a front door that died; their next request on
# one fails (no HTTP answer) in the moment after it is back.
STALE_CONNECTION_SECONDS = 1.0


def _failure_spans(samples: list[Sample], down: tuple[float, float] | None) -> tuple[int, float]:
    """Failed requests whose connection ended with no HTTP answer while the front door was
    down (probe seconds), and the seconds all failures spanned. They count by when they ended:
    a write the front door held lost its connection with it, however long before the kill it
    was sent (by design: it never reached a server). A failure with an HTTP status is never
    excused."""
    failed = [s for s in samples if s.outcome == "failed"]
    during = sum(
        1
        for s in failed
        if down
        and s.status == 0
        and down[0] <= s.at + s.seconds <= down[1] + STALE_CONNECTION_SECONDS
    )
    times = [s.at for s in failed]
    return during, (max(times) - min(times)) if times else 0.0


def _server_port(stack_dir: Path) -> int | None:
    """The port of the stack's PostgreSQL server, from its pid file (4th line)."""
    try:
        return int((postgres.data_dir(stack_dir) / "postmaster.pid").read_text().split("\n")[3])
    except (OSError, ValueError, IndexError):
        return None


def _server_ready_again(port: int, timeout: float = 120.0) -> float:
    """Wait until the stack's server takes connections again (after its crash recovery, which
    it runs once its supervisor restarted it); when it did (epoch)."""
    binaries = postgres.bin_dir()
    deadline = time.monotonic() + timeout
    while binaries is not None and time.monotonic() < deadline:
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", postgres.HOST, "-p", str(port), "-t", "1"],
            check=False,
        )
        if ready.returncode == 0:
            return time.time()
        time.sleep(0.05)
    return float("inf")


def _database_failures(
    samples: list[Sample], down: tuple[float, float] | None
) -> tuple[int, float]:
    """Failed requests answered from the database server's kill until the sites reconnected to
    it (any answer: the site says 500 or 503 while its database is gone; a request sent just
    before the kill is answered after it), and the seconds all failures spanned."""
    failed = [s for s in samples if s.outcome == "failed"]
    during = sum(
        1 for s in failed if down and down[0] <= s.at + s.seconds <= down[1] + RECONNECT_SECONDS
    )
    times = [s.at for s in failed]
    return during, (max(times) - min(times)) if times else 0.0


def _answering_again(url: str, timeout: float = 120.0) -> float:
    """Wait until the front door at `url` takes connections again; when it did (epoch)."""
    address = url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return time.time()
        except OSError:
            time.sleep(0.01)
    return float("inf")


def database_of_run(number: int, database: str, victims: tuple[str, ...]) -> str:
    """The engine of run `number`: `mixed` alternates (odd runs SQLite, even PostgreSQL); a
    run whose only victims need PostgreSQL's server runs on it."""
    if not set(victims) - {DATABASE_SERVER}:
        return "postgresql"
    if database == "mixed":
        return "postgresql" if number % 2 == 0 else "sqlite"
    return database


def choose_victim(rng: random.Random, database: str, victims: tuple[str, ...]) -> str:
    """On PostgreSQL the database server is the victim of about half the runs (when allowed);
    otherwise, and on SQLite, any other allowed victim."""
    others = tuple(v for v in victims if v != DATABASE_SERVER)
    if (
        database == "postgresql"
        and DATABASE_SERVER in victims
        and (not others or rng.random() < SERVER_KILL_SHARE)
    ):
        return DATABASE_SERVER
    return rng.choice(others)


def run_one(
    number: int,
    rng: random.Random,
    zdd: Zdd,
    rate: float,
    victims: tuple[str, ...] = VICTIMS,
    database: str = "sqlite",
    server_kill_phase: str = "return",
) -> ChaosRun:
    """One deployment with one kill; on PostgreSQL, a database server victim is killed once the
    deployment's configured phase is `server_kill_phase` (if it gets there)."""
    env = zdd.env
    stack = f"chaos-{uuid.uuid4().hex[:8]}"
    run = ChaosRun(number, victim=choose_victim(rng, database, victims), database=database)
    if run.victim == DATABASE_SERVER:
        run.server_kill_phase = server_kill_phase
    started = time.monotonic()
    engine = ["--database", database] if database != "sqlite" else []
    code, status = zdd("init", "-s", stack, "--version", SAMPLE_FROM_VERSION, *engine)
    if code != 0:
        run.outcome = f"init failed: {status.get('error', '')[:80]}"
        return run
    stack_dir = env.stack_dir(stack)
    spec = "app-postgresql.yaml" if database == "postgresql" else "app.yaml"
    target = ProbeTarget.of_file(env.root / "apps" / "sample" / spec)
    server_port = _server_port(stack_dir)
    probe = LoadProbe(status["public_url"], target, rate=rate)
    probe.start()
    killed_wall: float | None = None
    back_wall: float | None = None
    try:
        run.log = str(env.state_root / "chaos" / f"run-{number}.log")
        driver = zdd.start(
            "deploy", "-s", stack, "--version", SAMPLE_TO_VERSION, "--yes", log=Path(run.log)
        )
        # The kill falls in the deployment proper: after its action is recorded in the config
        # (the policy check before it changes nothing), anywhere in its next 10 seconds.
        while _configured_phase(env, stack) == "idle" and driver.poll() is None:
            time.sleep(0.02)
        if run.victim == DATABASE_SERVER:
            # In its phase, at a random moment of its first seconds.
            while _configured_phase(env, stack) != server_kill_phase and driver.poll() is None:
                time.sleep(0.02)
            deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        else:
            deadline = time.monotonic() + rng.uniform(0.0, 10.0)
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        # Wait for the victim to exist (as long as the deployment runs), then kill it.
        while run.killed_pid is None and driver.poll() is None:
            pid = _victim_pid(run.victim, stack_dir, driver)
            if pid is not None:
                run.killed_in_phase = _configured_phase(env, stack)
                os.kill(pid, signal.SIGKILL)
                run.killed_pid = pid
                killed_wall = time.time()
                run.killed_after_seconds = round(time.monotonic() - started, 2)
                if run.victim == "front door":
                    back_wall = _answering_again(status["public_url"])
                elif run.victim == DATABASE_SERVER and server_port is not None:
                    back_wall = _server_ready_again(server_port)
            time.sleep(0.05)
        driver.wait(timeout=600)
        run.steps.append(f"deploy exit {driver.returncode}")
        run.outcome = _finish(zdd, stack, run)
        time.sleep(1)  # a last second of traffic on the finished site
    finally:
        probe.stop()
    report = probe.report()
    # In the probe's own clock: seconds since its first request.
    killed_at = killed_wall - probe.started_at if killed_wall else None
    down = (
        (killed_at, back_wall - probe.started_at)
        if killed_at is not None and back_wall is not None
        else None
    )
    if run.victim == DATABASE_SERVER:
        run.database_down_seconds = round(down[1] - down[0], 2) if down else None
        run.failed_while_database_down, run.failed_seconds = _database_failures(probe.samples, down)
    else:
        front_door_down = down if run.victim == "front door" else None
        run.front_door_down_seconds = (
            round(front_door_down[1] - front_door_down[0], 2) if front_door_down else None
        )
        run.failed_while_front_door_down, run.failed_seconds = _failure_spans(
            probe.samples, front_door_down
        )
    base = (killed_wall - probe.started_at) if killed_wall else 0.0
    run.failures = [
        f"{s.at - base:+.2f}s {s.kind} {s.status}" for s in probe.samples if s.outcome == "failed"
    ][:12]
    run.requests, run.failed = report.requests, report.failed
    run.writes_acknowledged, run.writes_lost = report.writes_acknowledged, report.writes_lost
    code, _ = zdd("destroy", "-s", stack, "--yes")
    run.steps.append(f"destroy exit {code}")
    run.processes_left = len(processes.find_owned_under(stack_dir))
    run.seconds = round(time.monotonic() - started, 1)
    return run


def _finish(zdd: Zdd, stack: str, run: ChaosRun) -> str:
    """Resume (or approve) until the stack is idle, as an operator would."""
    for _ in range(RESUMES):
        code, status = zdd("status", "-s", stack)
        if code != 0:
            return f"status failed: {status.get('error', '')[:80]}"
        if status["state"] == "awaiting-approval":
            code, _ = zdd("complete", "-s", stack)
            run.steps.append(f"complete exit {code}")
        elif status["deployment_in_progress"] or not all(
            c["answering"] for c in status["components"].values()
        ):
            code, _ = zdd("resume", "-s", stack)
            run.steps.append(f"resume exit {code}")
        else:
            run.final_version = status["current_version"]
            return "idle"
    code, status = zdd("status", "-s", stack)
    run.final_version = status.get("current_version")
    return "idle" if code == 0 and not status.get("deployment_in_progress") else "stuck"


def _table(runs: list[ChaosRun]) -> Table:
    table = Table(
        "#", "database", "killed", "phase", "after s", "outcome", "version", "requests",
        "failed", "failed span s", "front door down s", "database down s", "failed while down",
        "writes lost", "left",
    )  # fmt: skip

    def seconds(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"

    for r in runs:
        table.add_row(
            str(r.run), r.database, r.victim if r.killed_pid else f"({r.victim}: none)",
            r.killed_in_phase or r.server_kill_phase or "-", f"{r.killed_after_seconds or 0:.1f}",
            r.outcome, r.final_version or "-", str(r.requests), str(r.failed),
            f"{r.failed_seconds:.1f}", seconds(r.front_door_down_seconds),
            seconds(r.database_down_seconds),
            str(r.failed_while_front_door_down + r.failed_while_database_down),
            str(r.writes_lost), str(r.processes_left),
        )  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zdd.chaos", description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("CHAOS_RUNS", "20")))
    parser.add_argument("--seed", type=int, default=None, help="Repeat a sequence of kills.")
    parser.add_argument("--rate", type=float, default=200.0, help="Probe requests per second.")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Default bench/chaos.json; bench/chaos-postgresql.json (-mixed) on PostgreSQL.",
    )
    parser.add_argument(
        "--victim", choices=ALL_VICTIMS, action="append", help="Kill only these (repeatable)."
    )
    parser.add_argument(
        "--database",
        choices=DATABASES,
        default=os.environ.get("CHAOS_DATABASE", "sqlite"),
        help="The sample site's engine: sqlite, postgresql (the stack's own cluster, whose "
        "server is also killed, in each phase in turn) or mixed (every other run).",
    )
    args = parser.parse_args(argv)
    if args.database not in DATABASES:
        parser.error(f"CHAOS_DATABASE {args.database!r}: one of {', '.join(DATABASES)}")
    if args.output is None:
        suffix = "" if args.database == "sqlite" else f"-{args.database}"
        args.output = Path(f"bench/chaos{suffix}.json")
    victims = tuple(args.victim or ALL_VICTIMS)
    if args.database == "sqlite" and not set(victims) - {DATABASE_SERVER}:
        parser.error("the database server is a victim only on --database postgresql or mixed")
    if args.database != "sqlite" and postgres.bin_dir() is None:
        parser.error("PostgreSQL's server programs are not installed: run `make setup`")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    env = Environment(find_project_root())
    env.apply()
    zdd, rng, runs = Zdd(env), random.Random(seed), []
    say(
        f"chaos: {args.runs} deployments v1 -> v2 on {args.database}, one process killed in "
        f"each (seed {seed})"
    )
    server_kills = 0
    for number in range(1, args.runs + 1):
        database = database_of_run(number, args.database, victims)
        phase = SERVER_KILL_PHASES[server_kills % len(SERVER_KILL_PHASES)]
        run = run_one(number, rng, zdd, args.rate, victims, database, phase)
        server_kills += run.victim == DATABASE_SERVER
        runs.append(run)
        verdict = "ok" if run.clean else "[bold red]NOT CLEAN[/bold red]"
        say(
            f"run {number} ({database}): killed {run.victim} in {run.killed_in_phase} -> "
            f"{run.outcome}, {run.failed} failed ({run.failed_while_database_down} while the "
            f"database was down), {run.writes_lost} lost, {run.seconds}s: {verdict}"
        )
    say(_table(runs))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "seed": seed,
        "database": args.database,
        "runs": [asdict(r) for r in runs],
        "writes_lost": sum(r.writes_lost for r in runs),
        "all_idle": all(r.outcome == "idle" for r in runs),
        "clean": all(r.clean for r in runs),
    }
    args.output.write_text(json.dumps(summary, indent=2))
    say(f"written {args.output}")
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
