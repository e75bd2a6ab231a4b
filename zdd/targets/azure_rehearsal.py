"""A rehearsal on Azure: the engine makes the copy, the clone's web app tries the current release.

Only the engine can make an Azure copy (`createMode: Copy` on Azure SQL; on PostgreSQL a
database of the primary's server filled by `pg_dump | pg_restore`), so a rehearsal here is a
state of the stack at rest, reachable by `pulumi up` by hand: `zdd:rehearse V` in phase `idle`
declares the copy, V's migration on it (the migration hook, as the migration login) and the
clone's web app running the current release on it, read-write, outside Front Door (its own
address admits the operator only, as for the gates). The driver then asks that address what
a visitor would (health path, the app spec's probe reads, write and lookup) and removes the
key again, which deletes the copy and the web app. Nothing public changes.

A rehearsal that was stopped leaves the key: the next rehearsal removes it first, and a
deployment's clone takes the web app over (its config change removes the key too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from zdd.appspec import AppSpec
from zdd.console import Say
from zdd.errors import BadInput, EngineFailed
from zdd.rehearsal import Failure, RehearsalEngine, RehearsalReport, ask_site
from zdd.targets import RehearsalRequest, app_spec

REHEARSE_KEY = "rehearse"
# An App Service app that is still starting answers these (its front end, not the site).
STARTING = frozenset({502, 503, 504})
POLL_SECONDS = 10.0


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30)


@dataclass(frozen=True)
class AzureRehearsal:
    stack: str
    spec: AppSpec
    from_version: str
    version: str
    copy_of: str
    engine: RehearsalEngine
    # A stopped rehearsal's key is still in the config: removed before this one starts.
    leftover: bool = False
    client: Callable[[str], httpx.Client] = _client
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def steps(self) -> list[str]:
        asks = [f"GET {self.spec.health.path}", "the app spec's probe reads, write and lookup"]
        return [
            f"update the stack at rest with zdd:{REHEARSE_KEY} {self.version}: a copy of "
            f"{self.copy_of}, {self.version}'s migrate on it "
            f"({' '.join(self.spec.migrate)}), and the clone's web app on "
            f"{self.from_version} connected to it, outside Front Door",
            f"ask the clone's own address (operators only): {', '.join(asks)}",
            f"update the stack without zdd:{REHEARSE_KEY}: the copy and the clone's web app "
            "are deleted; nothing public changes",
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "from_version": self.from_version,
            "version": self.version,
            "copy_of": self.copy_of,
            "scratch": f"zdd:{REHEARSE_KEY} (the clone's web app and a copy, in phase idle)",
            "steps": self.steps(),
        }

    def run(self, say: Say = lambda _: None) -> RehearsalReport:
        started = self.monotonic()
        cleared: dict[str, str | None] = {REHEARSE_KEY: None}
        if self.leftover:
            say("rehearsal: removing what a stopped rehearsal left")
            self.engine.apply(cleared, "rehearse (clean)")
        try:
            return self._rehearse(say, started)
        finally:
            say("rehearsal: deleting the copy and the clone's web app")
            self.engine.apply(cleared, "rehearse (clean)")

    def _rehearse(self, say: Say, started: float) -> RehearsalReport:
        say(f"rehearsal: copy, {self.version}'s migration and {self.from_version} on it")
        updating = self.monotonic()
        failure: Failure | None = None
        migration_ok = True
        output = ""
        try:
            outputs = self.engine.apply({REHEARSE_KEY: self.version}, f"rehearse {self.version}")
        except EngineFailed as exc:
            output = str(exc)
            # The copy comes first; the migration hook names itself in the engine's error.
            migrated = "-migration" in output
            migration_ok = False
            failure = Failure(
                "migration" if migrated else "copy",
                " ".join(self.spec.migrate) if migrated else "the copy of the primary database",
                None,
                output.strip()[-2000:],
            )
        seconds = self.monotonic() - updating
        passed: list[str] = []
        if failure is None:
            url = str(outputs.get("clone_url") or "")
            if not url:
                raise EngineFailed("the rehearsal's update exported no clone_url")
            say(f"rehearsal: asking {url}")
            with self.client(url) as client:
                failure = self._started(client) or ask_site(self, client, passed)
        return RehearsalReport(
            stack=self.stack,
            from_version=self.from_version,
            version=self.version,
            compatible=failure is None,
            migration_ok=migration_ok,
            # One update makes the copy and migrates it: its time is the migration's here.
            migration_seconds=seconds,
            migration_output=output.strip()[-4000:],
            # The copy is a database of its own in Azure: not counted from here.
            copy_rows=None,
            copy_bytes=None,
            copy_seconds=0.0,
            seconds=self.monotonic() - started,
            passed=tuple(passed),
            failure=failure,
        )

    def _started(self, client: httpx.Client) -> Failure | None:
        """Wait until the site itself answers (App Service answers 502-504 while a container
        starts), at most the spec's health timeout."""
        path = self.spec.health.path
        deadline = self.monotonic() + self.spec.health.timeout_seconds
        while True:
            try:
                status = client.get(path).status_code
                detail = f"App Service answered {status} until the health timeout"
            except httpx.HTTPError as exc:
                status, detail = None, f"no answer ({exc!r})"
            if status is not None and status not in STARTING:
                return None
            if self.monotonic() >= deadline:
                return Failure("start", f"GET {path}", status, detail)
            self.sleep(POLL_SECONDS)


def rehearsal_of(request: RehearsalRequest) -> AzureRehearsal:
    """The TargetOps hook: a rehearsal of a version on an Azure stack at rest."""
    config = request.config
    spec = app_spec(config)
    if not spec.migrate:
        raise BadInput(
            "the app spec has no `migrate`: a site that migrates as it starts cannot be "
            "rehearsed; deploy with --strategy clone"
        )
    return AzureRehearsal(
        stack=request.stack,
        spec=spec,
        from_version=config["currentVersion"],
        version=request.version,
        copy_of=str(request.outputs.get("primary_database") or "the primary database"),
        engine=request.engine,
        leftover=bool(config.get(REHEARSE_KEY)),
    )
