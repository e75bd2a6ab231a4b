"""The driver's order of steps against a fake stack and a fake target: which update, which gate
and which restore point come first. No engine, no cloud: the gates only record that they ran."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fake_stack import FakeStack
from zdd import driver as driver_module
from zdd import registry
from zdd.actions import Action
from zdd.driver import Driver
from zdd.environment import Environment
from zdd.errors import RefusedTransition
from zdd.phases import Phase, RestorePointTaken
from zdd.results import DeployResult
from zdd.stack import StateEvidence
from zdd.targets import TargetOps

AZURE_CLOCK_POINT = "2025-03-01T10:20:01Z"


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Driver]]:
    """A driver on a fake stack of a fake target that takes restore points on its own clock."""
    monkeypatch.setenv("ZDD_POLICY_PACK", "none")

    def make(
        config: dict[str, str],
        events: list[tuple[str, ...]],
        restorable: str | None = None,
        switches_in_program: bool = False,
    ) -> Driver:
        def take_restore_point() -> str:
            events.append(("restore point",))
            return AZURE_CLOCK_POINT

        ops = TargetOps(
            "fake-cloud",
            resolve_version=lambda _version, _config: None,
            initial_config=lambda _env, _stack: {},
            in_flight=lambda _outputs, _origin: 0,
            take_restore_point=take_restore_point,
            restorable_problem=lambda _outputs: restorable,
        )

        def gate(src: Phase, dst: Phase, *_args: Any, **_kwargs: Any) -> None:
            if (src, dst) != (src, src):
                events.append(("gate", str(src), str(dst)))

        entry = registry.TargetEntry("-", "-", switches_in_program=switches_in_program)
        monkeypatch.setitem(registry.TARGETS, "fake-cloud", entry)
        monkeypatch.setattr(driver_module, "ops_for", lambda _name: ops)
        monkeypatch.setattr(driver_module, "pass_gate", gate)
        stack = FakeStack({"target": "fake-cloud", "deploymentId": "d1", **config}, events)
        return Driver(Environment(tmp_path), "s", stack=stack)  # type: ignore[arg-type]

    yield make


def _run(driver: Driver, action: Action, **options: Any) -> DeployResult:
    result, _change = driver.begin(action, **options)
    while driver.advance(result):
        pass
    return result


def test_a_rollforward_from_cutover_takes_its_restore_point_after_the_drain(steps) -> None:
    events: list[tuple[str, ...]] = []
    driver = steps(
        {"phase": "cutover", "currentVersion": "v1", "targetVersion": "v2", "mode": "read-only"},
        events,
    )
    result, _change = driver.begin(Action.ROLLFORWARD, version="v3")
    assert "restorePoint" not in driver.stack.config()  # nothing taken before the drain
    while driver.advance(result) and driver.stack.config()["phase"] != "deploy":
        pass
    drained = events.index(("gate", "cutover", "deploy"))
    assert events.index(("restore point",)) > drained
    assert driver.stack.config()["restorePoint"] == AZURE_CLOCK_POINT
    assert events.count(("restore point",)) == 1


@pytest.mark.parametrize("approval", [False, True])
def test_a_target_that_verifies_the_primary_returns_in_the_update_that_deploys_it(
    steps, approval: bool
) -> None:
    events: list[tuple[str, ...]] = []
    driver = steps({"phase": "idle", "currentVersion": "v1"}, events, switches_in_program=True)
    _run(driver, Action.DEPLOY, version="v2", wait_for_approval=approval)
    if approval:
        # A person looks at the primary before it gets the traffic: `deploy` stays its own step.
        assert events[-4:] == [
            ("gate", "cutover", "deploy"),
            ("restore point",),
            ("up", "deploy"),
            ("gate", "deploy", "return"),
        ]
        assert driver.stack.config()["phase"] == "deploy"
        return
    assert events == [
        ("gate", "idle", "clone"),
        ("up", "clone"),
        # The clone's gate, the restore point's name, then one update that switches to the
        # clone, waits for the drain, records the restore point, migrates, verifies and
        # switches back; the clone goes only once drained.
        ("gate", "clone", "return"),
        ("restore point",),
        ("up", "return"),
        ("gate", "return", "idle"),
        ("up", "idle"),
    ]
    assert driver.stack.config()["currentVersion"] == "v2"


def test_an_abort_from_cutover_moves_the_traffic_back_before_the_clone_goes(steps) -> None:
    events: list[tuple[str, ...]] = []
    driver = steps(
        {"phase": "cutover", "currentVersion": "v1", "targetVersion": "v2", "cutoverAt": "1.0"},
        events,
    )
    _run(driver, Action.ABORT)
    assert events == [
        # The untouched primary proves itself, then gets the traffic back; the clone stays.
        ("gate", "cutover", "withdraw"),
        ("up", "withdraw"),
        # Only once that switch is out and the clone drained does the update delete the clone.
        ("gate", "withdraw", "idle"),
        ("up", "idle"),
    ]
    config = driver.stack.config()
    assert config["phase"] == "idle" and config["currentVersion"] == "v1"
    assert "targetVersion" not in config and "cutoverAt" not in config


def test_a_deployment_is_refused_while_the_primary_database_cannot_be_restored(steps) -> None:
    events: list[tuple[str, ...]] = []
    wait = "no restorable point yet; deploy again after 10:20 UTC"
    driver = steps({"phase": "idle", "currentVersion": "v1"}, events, restorable=wait)
    before = driver.stack.config()
    with pytest.raises(RefusedTransition, match="deploy again after 10:20 UTC") as refused:
        driver.begin(Action.DEPLOY, version="v2")
    assert refused.value.exit_code == 3
    assert driver.stack.config() == before and events == []


def test_the_state_evidence_tells_what_an_update_that_did_not_finish_did() -> None:
    urn = "urn:pulumi:site::smooth-deploy::zdd:local:Database$pulumi-python:dynamic:Resource::"
    proof = {"restore_point": "rp1", "taken_at": 1.7e9, "digest": "ab12"}
    found = StateEvidence(
        (
            {"urn": f"{urn}primary-db-restore-point", "outputs": proof},
            {"urn": f"{urn}primary-db-migration", "outputs": {"version": "v2"}},
            {"urn": f"{urn}front-door-cutover", "outputs": {"switched_at": 1.7e9}},
        )
    )
    assert found.restore_point("rp1") == RestorePointTaken("rp1", 1.7e9, "ab12")
    assert found.restore_point("rp2") is None and found.restore_point(None) is None
    assert found.schema == "v2" and found.switched_to_clone
    nothing = StateEvidence(())
    assert nothing.schema is None and not nothing.switched_to_clone
