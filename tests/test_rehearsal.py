"""Rehearsals and the strategies they choose: verdicts on the sample's releases, the compatible
path under the probe with no read-only window, refusals that change nothing, and a driver
killed in each step of the compatible path (and in its rehearsal) that is resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers.commands import PROBE_RATE, ROOT, Result, config_file, killed_in, stack_dir
from tests.helpers.driver import paused_for_approval
from zdd.actions import Action, Refused, StackState, plan
from zdd.errors import RefusedTransition
from zdd.phases import (
    DatabaseMode,
    EdgeWrites,
    Instance,
    Phase,
    PhaseSettings,
    RestorePointTaken,
    Strategy,
    declare,
)
from zdd.probe import LoadProbe, ProbeTarget
from zdd.processes import find_owned, owner_id
from zdd.rehearsal import (
    MIGRATION_OWNER,
    SCRATCH,
    SITE_OWNER,
    Failure,
    RehearsalReport,
    StrategyChoice,
    decide,
)

Make = Callable[[str], dict[str, Any]]
SAMPLE_PROBE = ProbeTarget.of_file(ROOT / "apps/sample/app.yaml")


def report(compatible: bool) -> RehearsalReport:
    failure = None if compatible else Failure("health", "GET /healthz", 500, "schema-mismatch")
    return RehearsalReport(
        "s", "v1", "v2", compatible, True, 0.5, "", 13, 4096, 0.01, 1.2, ("GET /healthz",), failure
    )


def test_auto_takes_the_compatible_path_only_on_a_passed_rehearsal() -> None:
    assert decide(StrategyChoice.AUTO, report(True)).strategy is Strategy.COMPATIBLE
    fallback = decide(StrategyChoice.AUTO, report(False))
    assert fallback.strategy is Strategy.CLONE and "GET /healthz -> 500" in fallback.reason
    assert decide(StrategyChoice.CLONE, None).strategy is Strategy.CLONE
    assert decide(StrategyChoice.COMPATIBLE, report(True)).strategy is Strategy.COMPATIBLE
    with pytest.raises(RefusedTransition, match=r"GET /healthz -> 500.*nothing was changed"):
        decide(StrategyChoice.COMPATIBLE, report(False))


def test_the_compatible_clone_serves_the_primary_database_with_writes_passing() -> None:
    for phase in (Phase.CLONE, Phase.CUTOVER, Phase.DEPLOY, Phase.RETURN):
        settings = PhaseSettings(
            phase, "v1", "v1.1", restore_point="rp-1", strategy=Strategy.COMPATIBLE
        )
        declared = declare(settings)
        assert declared.clone is not None and declared.clone.version == "v1"
        assert declared.clone.database is Instance.PRIMARY
        assert declared.clone.database_mode is DatabaseMode.READ_WRITE
        assert declared.edge_writes is EdgeWrites.PASS
    idle = declare(PhaseSettings(Phase.IDLE, "v1.1", strategy=Strategy.COMPATIBLE))
    assert idle.clone is None


def test_after_a_restore_the_compatible_clone_keeps_the_generation_it_serves() -> None:
    restored = PhaseSettings(
        Phase.DEPLOY, "v1", "v1", restore_point="rp-1", database_generation=2,
        restored_from="rp-1", strategy=Strategy.COMPATIBLE,
    )  # fmt: skip
    declared = declare(restored)
    assert declared.primary_database_generation == 2
    assert declared.shared_database_generation == 1
    state = StackState(
        restored, Phase.DEPLOY, restore_point_taken=RestorePointTaken("rp-1", 1.0, "d")
    )
    with pytest.raises(Refused, match="already restored"):
        plan(Action.ROLLBACK_DATABASE, state)


def _config(name: str) -> str:
    return config_file(name).read_text()


def _no_rehearsal_left(name: str) -> None:
    assert not (stack_dir(name) / SCRATCH).exists()
    for resource in (SITE_OWNER, MIGRATION_OWNER):
        assert find_owned(owner_id(stack_dir(name), resource)) == []


@pytest.mark.engine(minutes=2)
def test_rehearsal_verdicts_refusals_and_the_auto_strategy(
    local_stack: Make, zdd: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name = stack["stack"]
    config = _config(name)

    preview = zdd("rehearse", "-s", name, "--version", "v2", "--preview", "--json")
    assert preview.code == 0, preview.stderr
    assert "start v1 on the migrated copy" in " ".join(preview.json()["steps"])
    assert not (stack_dir(name) / SCRATCH).exists()

    additive = zdd("rehearse", "-s", name, "--version", "v1.1", "--json")
    assert additive.code == 0, additive.stderr
    verdict = additive.json()
    assert verdict["compatible"] and verdict["migration_ok"], verdict
    assert verdict["copy"]["rows"] >= 12 and verdict["migration_seconds"] > 0
    _no_rehearsal_left(name)

    renaming = zdd("rehearse", "-s", name, "--version", "v2", "--json").json()
    assert renaming["migration_ok"] and not renaming["compatible"]
    assert renaming["failure"]["request"] == "GET /healthz"
    assert renaming["failure"]["status"] == 500
    assert "articles.body" in renaming["failure"]["detail"]
    _no_rehearsal_left(name)

    # Wrong input: refused, and the stack's config is as it was.
    unknown = zdd("deploy", "-s", name, "--version", "v1.1", "--strategy", "blue", "--json")
    assert unknown.code == 2 and "blue" in unknown.json()["error"]
    refused = zdd("deploy", "-s", name, "--version", "v2", "--strategy", "compatible", "--json")
    assert refused.code == 3 and "GET /healthz -> 500" in refused.json()["error"]
    assert _config(name) == config
    assert zdd("status", "-s", name, "--json").json()["state"] == "idle"

    auto = zdd("deploy", "-s", name, "--version", "v1.1", "--strategy", "auto", "--probe",
               "--yes", "--json")  # fmt: skip
    assert auto.code == 0, auto.stderr
    shipped = auto.json()
    assert shipped["strategy"] == "compatible", shipped["strategy_reason"]
    assert "v1 runs on v1.1's schema" in shipped["strategy_reason"]
    assert shipped["read_only_window_seconds"] == 0
    probe = shipped["probe"]
    assert probe["writes_acknowledged"] > 0
    assert (probe["failed"], probe["writes_refused"], probe["writes_lost"]) == (0, 0, 0), probe
    assert (probe["writes_held"], probe["writes_hidden"]) == (0, 0), probe

    clone = zdd("deploy", "-s", name, "--version", "v2", "--strategy", "auto", "--probe",
                "--yes", "--json")  # fmt: skip
    assert clone.code == 0, clone.stderr
    fallback = clone.json()
    assert fallback["strategy"] == "clone" and "GET /healthz" in fallback["strategy_reason"]
    assert fallback["probe"]["failed"] == 0 and fallback["probe"]["writes_lost"] == 0
    status = zdd("status", "-s", name, "--json").json()
    assert (status["state"], status["current_version"]) == ("idle", "v2")


@pytest.mark.engine(minutes=2)
def test_a_driver_killed_in_each_step_of_the_compatible_path_is_resumed(
    local_stack: Make, zdd: Callable[..., Result], engine_env: dict[str, str]
) -> None:
    # v2 and v2.1 share a schema: a deployment between them is proven compatible.
    stack = local_stack("v2")
    name = stack["stack"]
    deploy = ["deploy", "-s", name, "--version", "v2.1", "--strategy", "auto", "--yes"]
    probe = LoadProbe(stack["public_url"], SAMPLE_PROBE, rate=PROBE_RATE)
    probe.start()
    try:
        # In the rehearsal: nothing was written; its copy and process are cleaned next time.
        killed_in(deploy, "rehearsal: v2 on the migrated copy", engine_env, pause=0.3)
        assert (stack_dir(name) / SCRATCH).exists()
        assert zdd("status", "-s", name, "--json").json()["state"] == "idle"
        killed_in(deploy, "clone: pulumi up", engine_env)
        _no_rehearsal_left(name)
        # Then each resume is killed in the next step, until the last one finishes.
        for phase in ("return", "idle"):
            killed_in(["resume", "-s", name], f"{phase}: pulumi up", engine_env)
        resumed = zdd("resume", "-s", name, "--json")
        assert resumed.code == 0, resumed.stderr
    finally:
        probe.stop()
    status = zdd("status", "-s", name, "--json").json()
    assert (status["state"], status["current_version"]) == ("idle", "v2.1")
    seen = probe.report()
    assert seen.failed == 0, seen.failures
    assert (seen.writes_refused, seen.writes_lost, seen.writes_hidden) == (0, 0, 0)
    assert seen.writes_acknowledged > 0


@pytest.mark.engine(minutes=2)
def test_a_rollback_with_database_on_the_compatible_path_reports_the_writes_it_loses(
    local_stack: Make, zdd: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    paused_for_approval(zdd, name, "v1.1", "--strategy", "compatible")
    written = httpx.post(f"{public}/api/articles", json={"title": "after-the-restore-point"})
    assert written.status_code == 201
    config = _config(name)
    unacknowledged = zdd("rollback", "-s", name, "--with-database", "--json")
    assert unacknowledged.code == 2 and "--accept-data-loss" in unacknowledged.json()["error"]
    assert _config(name) == config

    rolled = zdd("rollback", "-s", name, "--with-database", "--accept-data-loss", "--probe",
                 "--json")  # fmt: skip
    assert rolled.code == 0, rolled.stderr
    report = rolled.json()
    added = report["lost_writes"]["tables"]["articles"]["added"]
    assert "after-the-restore-point" in {row["title"] for row in added}
    # The current release kept the traffic throughout: it never restarted.
    assert report["probe"]["failed"] == 0 and report["probe"]["writes_refused"] == 0
    status = zdd("status", "-s", name, "--json").json()
    assert (status["state"], status["current_version"]) == ("idle", "v1")
    assert status["database_generation"] == 2
