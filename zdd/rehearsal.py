"""Rehearsing a release on a copy of the primary's data, and the strategy a deployment takes.

A rehearsal answers one question before anything visible changes: does the release running now
keep working once the new release's migration has run? It takes a consistent copy of the
primary's database and files while the primary serves (a target's `Copier`: SQLite's online
backup, a base backup of a PostgreSQL cluster), runs the new release's `migrate` on the copy
(timed, its output kept), starts the CURRENT release on the migrated copy on a free port, and
asks it for its health path and the app spec's probe reads, write and lookup. Then the copy,
its server and the process go.

It is a driver operation, not a phase: nothing of the stack's declared state changes, so the
engine has nothing to do, and no public address ever reaches the copy. Everything it makes
belongs to the stack: the scratch folder `rehearsal/` in the stack's own folder, and processes
whose owner ids name that folder (a database server that runs as its own OS user is found by
its pid file there). A rehearsal that was killed is cleaned by the next one, and `zdd destroy`
stops every process of the stack's folder and removes it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import httpx

from zdd import processes
from zdd.appspec import AppSpec, Placement
from zdd.console import Say
from zdd.errors import BadInput, RefusedTransition
from zdd.phases import DatabaseMode, Instance, Strategy
from zdd.probe import TITLE, ProbeTarget

# The scratch folder in the stack's folder, and the owner ids of the rehearsal's processes.
SCRATCH = "rehearsal"
SITE_OWNER = "rehearsal-site"
MIGRATION_OWNER = "rehearsal-migration"
COPY_OWNER = "rehearsal-database"
LOG_LINES = 20
# How long a release that listens may answer its health path with an error before it fails.
UNHEALTHY_AFTER_SECONDS = 5.0


def scratch_dir(stack_dir: Path) -> Path:
    return stack_dir / SCRATCH


@dataclass(frozen=True)
class Failure:
    """The first thing that went wrong on the copy, with what the site said about it."""

    step: str  # migration, start, health, read, write or lookup
    request: str  # e.g. "GET /api/articles?limit=5", or the command that failed
    status: int | None  # the HTTP status, or the command's exit code
    detail: str  # the start of the answer, or the command's output
    log: tuple[str, ...] = ()  # the site's last log lines

    def in_words(self) -> str:
        status = f" -> {self.status}" if self.status is not None else ""
        return f"{self.step}: {self.request}{status}: {self.detail[:300]}"

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "request": self.request,
            "status": self.status,
            "detail": self.detail,
            "log": list(self.log),
        }


@dataclass(frozen=True)
class RehearsalReport:
    stack: str
    from_version: str
    version: str
    compatible: bool
    migration_ok: bool
    migration_seconds: float
    migration_output: str
    # None where the copy lives in the cloud and only its own service could count it.
    copy_rows: int | None
    copy_bytes: int | None
    copy_seconds: float
    seconds: float  # the whole rehearsal, cleaning included
    passed: tuple[str, ...]  # the requests that got the expected answer
    failure: Failure | None

    def in_words(self) -> str:
        if self.compatible:
            return (
                f"{self.from_version} runs on {self.version}'s schema: its health check and "
                f"{len(self.passed) - 1} probe request(s) passed on a migrated copy"
                + (f" of {self.copy_rows} rows" if self.copy_rows is not None else "")
            )
        assert self.failure is not None
        return f"{self.from_version} fails on {self.version}'s schema: {self.failure.in_words()}"

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "from_version": self.from_version,
            "version": self.version,
            "compatible": self.compatible,
            "migration_ok": self.migration_ok,
            "migration_seconds": round(self.migration_seconds, 3),
            "migration_output": self.migration_output,
            "copy": {
                "rows": self.copy_rows,
                "bytes": self.copy_bytes,
                "seconds": round(self.copy_seconds, 3),
            },
            "seconds": round(self.seconds, 3),
            "passed": list(self.passed),
            "failure": self.failure.as_json() if self.failure else None,
            "verdict": self.in_words(),
        }


class Rehearsal(Protocol):
    """A rehearsal of `version` on one stack, as a target makes it: `steps()` is its preview,
    `run` does it and reports (leaving nothing behind)."""

    @property
    def stack(self) -> str: ...

    @property
    def spec(self) -> AppSpec: ...

    @property
    def from_version(self) -> str: ...

    @property
    def version(self) -> str: ...

    def steps(self) -> list[str]: ...

    def as_json(self) -> dict[str, Any]: ...

    def run(self, say: Say) -> RehearsalReport: ...


class RehearsalEngine(Protocol):
    """The driver's engine, for a rehearsal that only the engine can make (a cloud copy):
    `apply` sets the stack config `change`, runs an update of the stack at rest, and returns
    its outputs; it raises `EngineFailed` (the update's error) when the update fails."""

    def apply(self, change: dict[str, str | None], label: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SiteCopy:
    """The rehearsal's copy of the primary's data, as the site's placeholders name it."""

    database: str  # `{database}`: the copy's file, or its database's name on its own server
    files: Path  # `{files}`
    rows: int
    bytes: int
    # `{database_url}` on a database server (the copy's own, never the primary's); None: the
    # copy is a SQLite file.
    server_url: str | None = None


class Copier(Protocol):
    """How a target copies the primary's database and files into the scratch folder while the
    primary serves. `copy` lasts as long as its block (a server it starts stops at the end);
    `clean` stops what a copy of a killed rehearsal left running, before its folder goes."""

    @property
    def source(self) -> str: ...

    def describe(self, scratch: Path) -> str: ...

    def copy(self, scratch: Path, owner: str) -> AbstractContextManager[SiteCopy]: ...

    def clean(self, scratch: Path) -> None: ...


@dataclass(frozen=True)
class RehearsalPlan:
    """What a rehearsal of `version` does on one stack; `steps()` is its preview."""

    stack: str
    stack_dir: Path  # every file and process of the rehearsal belongs to it
    copier: Copier  # the primary's data, copied into the scratch folder
    spec: AppSpec
    from_version: str
    version: str

    @property
    def scratch(self) -> Path:
        return scratch_dir(self.stack_dir)

    def placement(self, copy: SiteCopy, version: str, port: int) -> Placement:
        """The current release and the new one's migration both see the copy as a read-write
        clone: the site's own ReadOnly mode would hide a write that fails on the new schema."""
        return Placement(
            version=version,
            release=self.spec.release(version),
            instance=str(Instance.CLONE),
            database_mode=DatabaseMode.READ_WRITE,
            database=copy.database,
            files=str(copy.files),
            port=port,
            server_url=copy.server_url,
        )

    def steps(self) -> list[str]:
        probe = ProbeTarget.of(self.spec)
        asks = [f"GET {self.spec.health.path}", *(f"GET {path}" for path in probe.reads)]
        if probe.write is not None:
            asks += [f"{probe.write.method} {probe.write.path}", f"GET {probe.write.lookup}"]
        return [
            self.copier.describe(self.scratch),
            f"run {self.version}'s migrate on the copy: {' '.join(self.spec.migrate)}",
            f"start {self.from_version} on the migrated copy on a free port",
            f"ask it: {', '.join(asks)}",
            f"stop it and remove {self.scratch}; nothing public changes",
        ]

    def run(self, say: Say = lambda _: None) -> RehearsalReport:
        return run(self, say)

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "from_version": self.from_version,
            "version": self.version,
            "copy_of": self.copier.source,
            "scratch": str(self.scratch),
            "steps": self.steps(),
        }


def clean(stack_dir: Path, copier: Copier | None = None) -> None:
    """Stop the rehearsal's processes (found by owner id only, and by `copier` for a server of
    its copy) and remove its scratch folder."""
    for resource in (SITE_OWNER, MIGRATION_OWNER, COPY_OWNER):
        processes.stop_owned(processes.owner_id(stack_dir, resource), timeout=5)
    if copier is not None:
        copier.clean(scratch_dir(stack_dir))
    shutil.rmtree(scratch_dir(stack_dir), ignore_errors=True)


def run(plan: RehearsalPlan, say: Say = lambda _: None) -> RehearsalReport:
    """Rehearse `plan` and report; leaves nothing behind, and cleans what a killed one left."""
    if not plan.spec.migrate:
        raise BadInput(
            "the app spec has no `migrate`: a site that migrates as it starts cannot be "
            "rehearsed; deploy with --strategy clone"
        )
    started = time.monotonic()
    clean(plan.stack_dir, plan.copier)
    try:
        say(f"rehearsal: copying {plan.copier.source} while the primary serves")
        copied = time.monotonic()
        plan.scratch.mkdir(parents=True, exist_ok=True)
        owner = processes.owner_id(plan.stack_dir, COPY_OWNER)
        with plan.copier.copy(plan.scratch, owner) as copy:
            return _rehearse(plan, copy, say, started, time.monotonic() - copied)
    finally:
        clean(plan.stack_dir, plan.copier)


def _rehearse(
    plan: RehearsalPlan, copy: SiteCopy, say: Say, started: float, copy_seconds: float
) -> RehearsalReport:
    port = processes.free_port()
    say(f"rehearsal: {plan.version}'s migration on the copy ({copy.rows} rows)")
    migration = plan.placement(copy, plan.version, port)
    migrating = time.monotonic()
    try:
        done = processes.run_exclusive(
            plan.spec.migrate_command(migration),
            processes.owner_id(plan.stack_dir, MIGRATION_OWNER),
            plan.scratch / "copy.migrate.lock",
            cwd=Path(migration.release),
            env=plan.spec.environment(migration),
        )
        exit_code, output = done.returncode, done.stdout
    except (OSError, processes.ProcessFailed) as exc:
        exit_code, output = None, str(exc)
    migration_seconds = time.monotonic() - migrating
    failure = None
    passed: list[str] = []
    if exit_code != 0:
        command = " ".join(plan.spec.migrate)
        failure = Failure("migration", command, exit_code, output.strip())
    else:
        say(f"rehearsal: {plan.from_version} on the migrated copy")
        failure = _try_current_release(plan, copy, port, passed)
    return RehearsalReport(
        stack=plan.stack,
        from_version=plan.from_version,
        version=plan.version,
        compatible=failure is None,
        migration_ok=exit_code == 0,
        migration_seconds=migration_seconds,
        migration_output=output.strip()[-4000:],
        copy_rows=copy.rows,
        copy_bytes=copy.bytes,
        copy_seconds=copy_seconds,
        seconds=time.monotonic() - started,
        passed=tuple(passed),
        failure=failure,
    )


def _try_current_release(
    plan: RehearsalPlan, copy: SiteCopy, port: int, passed: list[str]
) -> Failure | None:
    """Start the current release on the migrated copy and ask it what a visitor would."""
    placement = plan.placement(copy, plan.from_version, port)
    log = plan.scratch / "site.log"
    process = processes.start_detached(
        plan.spec.start_command(placement),
        log,
        processes.owner_id(plan.stack_dir, SITE_OWNER),
        env=plan.spec.environment(placement),
        cwd=Path(placement.release),
    )
    command = " ".join(plan.spec.start)
    timeout = plan.spec.health.timeout_seconds
    try:
        processes.wait_listening(process, port, log, timeout=timeout)
    except processes.ProcessFailed as exc:
        return Failure("start", command, process.poll(), str(exc).splitlines()[0], _log(log))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        return ask_site(plan, client, passed, lambda: _log(log))


def ask_site(
    plan: Rehearsal | RehearsalPlan,
    client: httpx.Client,
    passed: list[str],
    log: Callable[[], tuple[str, ...]] = tuple,
) -> Failure | None:
    """Ask the current release, running on the migrated copy behind `client`, for its health
    path and the app spec's probe reads, write and lookup; the first that fails, or None."""
    for step, method, path, body, ok in _requests(plan, plan.spec.health.timeout_seconds):
        request = f"{method} {path}"
        try:
            response = ok(client, method, path, body)
        except httpx.HTTPError as exc:
            return Failure(step, request, None, f"no answer ({exc!r})", log())
        if isinstance(response, httpx.Response):
            return Failure(step, request, response.status_code, response.text[:500], log())
        passed.append(request)
    return None


# One request of a rehearsal: answers None when it got what it expects, else the answer.
Check = Callable[[httpx.Client, str, str, Any], httpx.Response | None]


def _requests(
    plan: Rehearsal | RehearsalPlan, health_timeout: float
) -> list[tuple[str, str, str, Any, Check]]:
    probe = ProbeTarget.of(plan.spec)
    steps: list[tuple[str, str, str, Any, Check]] = [
        ("health", "GET", plan.spec.health.path, None, _healthy(plan, health_timeout)),
        *(("read", "GET", path, None, _status(200)) for path in probe.reads),
    ]
    if probe.write is not None:
        title = f"rehearsal-{uuid.uuid4().hex[:8]}"
        write, lookup = probe.write, probe.write.lookup.replace(TITLE, title)
        steps.append(
            ("write", write.method, write.path, write.body_for(title), _status(write.status))
        )
        steps.append(("lookup", "GET", lookup, None, _shows(title)))
    return steps


def _status(expected: int) -> Check:
    def check(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response | None:
        response = client.request(method, path, json=body)
        return None if response.status_code == expected else response

    return check


def _shows(title: str) -> Check:
    def check(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response | None:
        response = client.request(method, path, json=body)
        return None if response.is_success and title in response.text else response

    return check


def _healthy(plan: Rehearsal | RehearsalPlan, timeout: float) -> Check:
    """2xx from the current release (if the site reports its version there). A site may
    listen before it is ready: its answer is asked again for a few seconds, not for the whole
    health timeout, which a release that refuses the schema would otherwise always use up."""

    def check(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response | None:
        deadline = time.monotonic() + min(timeout, UNHEALTHY_AFTER_SECONDS)
        while True:
            response = client.request(method, path, json=body)
            if response.is_success:
                return None if _reports(response, plan.from_version) else response
            if time.monotonic() >= deadline:
                return response
            time.sleep(0.1)

    return check


def _reports(response: httpx.Response, version: str) -> bool:
    try:
        body = response.json()
    except ValueError:
        return True
    return not isinstance(body, dict) or body.get("version", version) == version


def _log(path: Path) -> tuple[str, ...]:
    return tuple(processes.tail(path, LOG_LINES).splitlines())


# -- the strategy a deployment takes ---------------------------------------------------------


class StrategyChoice(StrEnum):
    """What the user asks for: a strategy, or `auto` (rehearse, then the safest that fits)."""

    CLONE = "clone"
    AUTO = "auto"
    COMPATIBLE = "compatible"

    @classmethod
    def parse(cls, name: StrategyChoice | str) -> StrategyChoice:
        try:
            return cls(str(name))
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise BadInput(f"strategy {name!r} is not one of: {allowed}") from None

    @property
    def rehearses(self) -> bool:
        return self is not StrategyChoice.CLONE


@dataclass(frozen=True)
class Decision:
    strategy: Strategy
    reason: str


def decide(choice: StrategyChoice, report: RehearsalReport | None) -> Decision:
    """The path a deployment takes (rule 14 of docs/design.md): the compatible one only on a
    rehearsal's proof; `compatible` without it is refused before anything changes."""
    if choice is StrategyChoice.CLONE or report is None:
        return Decision(Strategy.CLONE, "--strategy clone: the clone path, no rehearsal")
    if report.compatible:
        return Decision(Strategy.COMPATIBLE, f"rehearsal: {report.in_words()}")
    if choice is StrategyChoice.COMPATIBLE:
        raise RefusedTransition(
            f"--strategy compatible refused: {report.in_words()}; nothing was changed. Deploy "
            "with --strategy clone (or auto), which keeps the running release off the new schema"
        )
    return Decision(Strategy.CLONE, f"rehearsal: {report.in_words()}; the clone path runs")
