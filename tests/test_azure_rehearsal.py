"""Rehearsals and the compatible path on Azure: the stack at rest with `zdd:rehearse` under
Pulumi's mocks (Azure SQL and PostgreSQL), the compatible path's phases under mocks, and the
driver's side of a rehearsal against a fake engine and a fake clone web app."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import httpx
import pulumi
import pytest

from infra.program import Target, build
from policies.rules import evaluate
from tests.helpers.azure_mocks import (
    BASE_CONFIG,
    DATABASE,
    ORIGIN,
    PASSWORD,
    POSTGRES_APP,
    ROUTE,
    Registration,
    Run,
    app_spec,
    run_program,
)
from tests.helpers.policy_checks import config_for
from tests.helpers.policy_checks import resource_of as policy_resource
from tests.helpers.settings import RESTORE_POINT
from tests.helpers.settings import phase_settings as stack
from zdd import appspec
from zdd.actions import Action, StackState, plan
from zdd.driver import _RehearsalUpdates
from zdd.environment import Environment
from zdd.errors import BadInput, EngineFailed, RefusedTransition
from zdd.history import group_history
from zdd.phases import (
    DatabaseMode,
    EdgeWrites,
    Instance,
    InvalidStackConfig,
    Phase,
    PhaseSettings,
    Strategy,
    declare,
)
from zdd.rehearsal import StrategyChoice, decide
from zdd.targets import RehearsalRequest
from zdd.targets.azure import AZURE
from zdd.targets.azure_rehearsal import AzureRehearsal, rehearsal_of

REHEARSING = {"rehearse": "v1.1"}
NO_ENV = cast(Environment, None)  # an Azure rehearsal reads nothing of this machine
PROBE = {
    "reads": ["/api/articles"],
    "write": {
        "method": "POST",
        "path": "/api/articles",
        "json": {"title": "{title}"},
        "status": 201,
        "lookup": "/api/articles?title={title}",
    },
}


def rehearsing(**overrides: Any) -> PhaseSettings:
    return PhaseSettings.from_config({"currentVersion": "v1", **REHEARSING, **overrides})


@pytest.fixture(scope="module")
def sql_rehearsal() -> Run:
    """The Azure SQL stack at rest with `zdd:rehearse v1.1`, declared once for the module."""
    return run_program(rehearsing())


def _connection(app: Registration) -> str:
    (entry,) = app.inputs["siteConfig"]["connectionStrings"]
    return str(entry["connectionString"])


# -- the phase model -------------------------------------------------------------------------


def test_a_rehearsal_is_the_stack_at_rest_with_a_read_write_clone_off_the_front_door() -> None:
    declaration = declare(rehearsing())
    assert declaration.phase is Phase.IDLE and declaration.traffic is Instance.PRIMARY
    assert declaration.rehearsal_version == "v1.1"
    assert declaration.clone is not None
    assert declaration.clone.version == "v1" and declaration.clone.database is Instance.CLONE
    assert declaration.clone.database_mode is DatabaseMode.READ_WRITE
    assert declaration.edge_writes is EdgeWrites.PASS
    assert declaration.primary.version == "v1" and declaration.primary_database_version == "v1"
    assert declare(PhaseSettings.from_config({"currentVersion": "v1"})).clone is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"phase": "clone", "targetVersion": "v2"}, "for a stack at rest"),
        ({"rehearse": "v1"}, "other than the current one"),
        ({"rehearse": "../v2"}, "not a version"),
    ],
)
def test_a_rehearsal_during_a_deployment_or_of_the_running_release_is_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidStackConfig, match=message):
        rehearsing(**values)


def test_a_deployment_replaces_a_stopped_rehearsal() -> None:
    state = StackState(rehearsing(), Phase.IDLE)
    change = plan(Action.DEPLOY, state, version="v2")
    assert "rehearse" in change and change["rehearse"] is None


def test_a_target_that_rehearses_without_the_engine_refuses_the_key() -> None:
    def never(*_args: Any) -> Any:
        raise AssertionError("nothing is declared")

    local = Target(name="local", database=never, site=never, front_door=never)
    with pytest.raises(pulumi.RunError, match="rehearses without the engine"):
        build(declare(rehearsing()), local)


# -- the rehearsal's resources, under mocks --------------------------------------------------


def test_azure_sql_rehearsal_migrates_a_copy_and_runs_the_current_release_on_it(
    sql_rehearsal: Run,
) -> None:
    run = sql_rehearsal
    copy = run.named("clone-db-copy")
    assert copy.type == DATABASE and copy.inputs["createMode"] == "Copy"
    assert copy.inputs["databaseName"] == "site-rehearsal"
    assert copy.inputs["sourceDatabaseId"] == run.named("primary-db-g1").id
    assert run.named("clone-db-access").inputs["read_only"] is False
    migration = run.named("clone-db-migration")
    assert migration.inputs["environment"]["ZDD_DATABASE_NAME"] == "site-rehearsal"
    assert migration.inputs["environment"]["ZDD_SCHEMA_VERSION"] == "v1.1"
    assert (
        "Initial Catalog=site-rehearsal;"
        in migration.inputs["environment"]["ZDD_DATABASE_CONNECTION"]
    )
    clone = run.named("clone-app")
    assert (
        clone.setting("ZDD_VERSION") == "v1" and clone.setting("ZDD_DATABASE_MODE") == "ReadWrite"
    )
    assert "Initial Catalog=site-rehearsal;User ID=zdd_clone;" in _connection(clone)
    assert migration.urn in clone.dependencies  # it starts on the migrated copy
    # Nothing public changes: the front door and the primary are declared as at rest.
    assert not [r for r in run.of_type(ORIGIN) if "clone" in r.name]
    (public,) = [r for r in run.of_type(ROUTE) if r.name == "front-door-public-route"]
    assert public.inputs["originGroup"]["id"].endswith("/originGroups/primary")
    assert not public.inputs.get("ruleSets")
    assert run.named("primary-app").setting("ZDD_VERSION") == "v1"
    assert run.named("primary-db-migration").inputs["triggers"] == ["v1", 1]
    assert run.outputs["clone_url"] == "https://zdd-test-a1b2c3-clone.azurewebsites.net"


def test_postgres_rehearsal_copies_into_the_primarys_server_and_migrates_the_copy() -> None:
    run = run_program(rehearsing(), app=POSTGRES_APP)
    copy = run.named("clone-db-copy")
    assert copy.inputs["databaseName"] == "site-rehearsal"
    assert copy.inputs["serverName"] == "zdd-test-a1b2c3-pg-g1"
    access = run.named("clone-db-access")
    assert access.inputs["read_only"] is False and access.inputs["destination"] == "site-rehearsal"
    environment = run.named("clone-db-migration").inputs["environment"]
    assert environment["PGDATABASE"] == "site-rehearsal" and environment["PGUSER"] == "migrator"
    assert access.urn in run.named("clone-db-migration").dependencies
    assert "/site-rehearsal?sslmode=require" in _connection(run.named("clone-app"))


# -- the compatible path, under mocks ---------------------------------------------------------


def test_the_compatible_clone_is_the_current_release_on_the_primary_database() -> None:
    run = run_program(stack(Phase.CUTOVER, strategy=Strategy.COMPATIBLE))
    assert not run.has("clone-db-copy") and not run.has("clone-db-access")
    clone = run.named("clone-app")
    assert (
        clone.setting("ZDD_DATABASE_MODE") == "ReadWrite" and clone.setting("ZDD_VERSION") == "v1"
    )
    assert _connection(clone) == _connection(run.named("primary-app"))
    assert "Initial Catalog=site-g1;" in _connection(clone)
    # Writes pass: no read-only rule set on the public route, which goes to the clone.
    (public,) = [r for r in run.of_type(ROUTE) if r.name == "front-door-public-route"]
    assert "ruleSets" not in public.inputs or not public.inputs["ruleSets"]
    assert public.inputs["originGroup"]["id"].endswith("/originGroups/clone")


def test_after_a_compatible_rollback_with_database_the_clone_keeps_its_generation() -> None:
    settings = stack(
        Phase.DEPLOY,
        strategy=Strategy.COMPATIBLE,
        target_version="v1",
        migrate_to="v1",
        database_generation=2,
        restored_from=RESTORE_POINT,
    )
    run = run_program(settings)
    assert "Initial Catalog=site-g2;" in _connection(run.named("primary-app"))
    clone = _connection(run.named("clone-app"))
    assert "Initial Catalog=site-g1;" in clone and f"Password={PASSWORD};" in clone
    # Only named: generation 1 is declared (kept) by the primary's restore, once.
    assert [r.inputs["databaseName"] for r in run.of_type(DATABASE)] == ["site-g1", "site-g2"]


# -- the driver's side, against a fake engine and a fake web app -----------------------------


class FakeEngine:
    def __init__(self, failure: str | None = None) -> None:
        self.changes: list[dict[str, str | None]] = []
        self.failure = failure

    def apply(self, change: dict[str, str | None], label: str) -> dict[str, Any]:
        self.changes.append(dict(change))
        if change.get("rehearse") and self.failure:
            raise EngineFailed(self.failure)
        return {"clone_url": "https://zdd-x-clone.azurewebsites.net"}


class FakeSite:
    """The clone's web app: v1 on the migrated copy; `broken` is the path it fails on."""

    def __init__(self, *, broken: str | None = None, starting: int = 0) -> None:
        self.broken, self.starting = broken, starting
        self.titles: list[str] = []
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(f"{request.method} {request.url.path}")
        if self.starting:
            self.starting -= 1
            return httpx.Response(503, text="Application is starting")
        if request.url.path == self.broken:
            return httpx.Response(500, text="column articles.summary does not exist")
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"version": "v1", "instance": "clone"})
        if request.method == "POST":
            self.titles.append(json.loads(request.content)["title"])
            return httpx.Response(201, json={"id": 1})
        return httpx.Response(200, text=" ".join(self.titles) or "[]")


def azure_rehearsal(
    engine: FakeEngine, site: FakeSite, *, leftover: bool = False
) -> AzureRehearsal:
    spec = appspec.from_config({"app": app_spec(probe=PROBE)})
    assert spec is not None
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    return AzureRehearsal(
        stack="prod", spec=spec, from_version="v1", version="v1.1", copy_of="site-g1",
        engine=engine, leftover=leftover,
        client=lambda url: httpx.Client(base_url=url, transport=httpx.MockTransport(site)),
        sleep=sleep, monotonic=lambda: clock[0],
    )  # fmt: skip


def test_a_compatible_release_passes_on_the_clones_address_and_leaves_nothing() -> None:
    engine, site = FakeEngine(), FakeSite(starting=2)
    report = azure_rehearsal(engine, site).run()
    assert report.compatible and report.migration_ok and report.failure is None
    assert report.passed == (
        "GET /healthz",
        "GET /api/articles",
        "POST /api/articles",
        "GET /api/articles?title={title}".replace("{title}", site.titles[0]),
    )
    assert engine.changes == [{"rehearse": "v1.1"}, {"rehearse": None}]
    assert site.asked[:3] == ["GET /healthz"] * 3  # waited while App Service started it


def test_an_incompatible_release_names_the_failing_request_and_is_cleaned() -> None:
    engine, site = FakeEngine(), FakeSite(broken="/api/articles")
    report = azure_rehearsal(engine, site).run()
    assert not report.compatible and report.migration_ok
    assert report.failure is not None and report.failure.request == "GET /api/articles"
    assert report.failure.status == 500 and "summary" in report.failure.detail
    assert engine.changes[-1] == {"rehearse": None}
    with pytest.raises(RefusedTransition, match="GET /api/articles"):
        decide(StrategyChoice.COMPATIBLE, report)
    assert decide(StrategyChoice.AUTO, report).strategy is Strategy.CLONE


def test_a_failed_migration_is_reported_without_asking_the_site() -> None:
    engine, site = (
        FakeEngine(failure="clone-db-migration: exit status 1: duplicate column"),
        FakeSite(),
    )
    report = azure_rehearsal(engine, site, leftover=True).run()
    assert not report.migration_ok and not report.compatible
    assert report.failure is not None and report.failure.step == "migration"
    assert "duplicate column" in report.failure.detail
    assert site.asked == []
    # A stopped rehearsal's key is removed first, and this one's at the end.
    assert engine.changes == [{"rehearse": None}, {"rehearse": "v1.1"}, {"rehearse": None}]


def test_a_site_that_never_starts_fails_the_rehearsal_at_start() -> None:
    site = FakeSite(starting=10_000)
    report = azure_rehearsal(FakeEngine(), site).run()
    assert report.failure is not None and report.failure.step == "start"
    assert report.failure.status == 503


def test_azure_stacks_can_rehearse_and_say_what_it_would_do() -> None:
    assert AZURE.rehearsal is rehearsal_of
    config = {"currentVersion": "v1", "app": app_spec(), "rehearse": "v0.9"}
    plan_ = rehearsal_of(
        RehearsalRequest(
            NO_ENV, "prod", config, {"primary_database": "site-g1"}, "v2", FakeEngine()
        )
    )
    assert plan_.leftover and plan_.copy_of == "site-g1"
    shown = plan_.as_json()
    assert {"stack", "from_version", "version", "copy_of", "scratch", "steps"} <= set(shown)
    assert "nothing public changes" in shown["steps"][-1]
    with pytest.raises(BadInput, match="no `migrate`"):
        rehearsal_of(
            RehearsalRequest(
                NO_ENV, "prod", {**config, "app": app_spec(migrate=None)}, {}, "v2", FakeEngine()
            )
        )


def test_each_rehearsal_update_is_recorded_as_one() -> None:
    class Stack:
        def __init__(self) -> None:
            self.values: dict[str, str] = {"currentVersion": "v1"}

        def set_config(self, change: dict[str, str | None]) -> None:
            for key, value in change.items():
                self.values.pop(key, None) if value is None else self.values.update({key: value})

        def config(self) -> dict[str, str]:
            return dict(self.values)

        def outputs(self) -> dict[str, Any]:
            return {"clone_url": "https://c"} if "rehearse" in self.values else {}

    class Driver:
        def __init__(self) -> None:
            self.stack = Stack()
            self.updates: list[tuple[Phase, str, dict[str, Any]]] = []

        def _up(self, phase: Phase, label: str, _result: None, message: dict[str, Any]) -> None:
            self.updates.append((phase, label, message))

    driver = Driver()
    engine = _RehearsalUpdates(cast(Any, driver), "v1.1")
    assert engine.apply({"rehearse": "v1.1"}, "rehearse v1.1") == {"clone_url": "https://c"}
    assert engine.apply({"rehearse": None}, "rehearse (clean)") == {}
    assert [(p, m["action"], m["to"]) for p, _, m in driver.updates] == [
        (Phase.IDLE, "rehearse", "v1.1"),
        (Phase.IDLE, "rehearse", "v1.1"),
    ]
    # One rehearsal is one entry of `zdd history`, ended by the update that removes it.
    records = [
        {**m, "phase": str(p), "result": "succeeded", "started": "t", "seconds": 1.0}
        for p, _, m in driver.updates
    ]
    (entry,) = group_history(list(reversed(records)))
    assert entry["actions"] == ["rehearse"] and entry["outcome"] == "succeeded"
    assert entry["deployment"].startswith("rehearsal-") and len(entry["phases"]) == 2


def test_the_policy_pack_lets_a_rehearsal_clone_write_and_only_a_rehearsal(
    sql_rehearsal: Run,
) -> None:
    settings = rehearsing()
    resources = [policy_resource(r) for r in sql_rehearsal.registrations]
    at_rest = config_for(settings, BASE_CONFIG)
    rehearsal = dataclasses.replace(at_rest, values={**at_rest.values, "zdd:rehearse": "v1.1"})
    assert evaluate(resources, rehearsal) == {}
    # The same read-write clone without the rehearsal's key is a clone that loses writes.
    assert "clone-read-only" in evaluate(resources, at_rest)
