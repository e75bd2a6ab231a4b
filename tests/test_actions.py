"""What each action writes to the stack config, and when it is refused (pure, no engine)."""

from __future__ import annotations

import pytest

from tests.helpers.settings import phase_settings
from zdd.actions import (
    Action,
    Refused,
    StackState,
    next_step,
    plan,
)
from zdd.phases import Mode, Phase, RestorePointTaken, settings_digest

POINT = "2026-01-01T00:00:00Z"


def state(phase: Phase, applied: Phase | None = None, **overrides: object) -> StackState:
    """A stack whose updates applied `applied` (default: `phase`); a restore point counts as
    taken when an update reached deploy, unless `taken` says otherwise."""
    awaiting = bool(overrides.pop("awaiting", False))
    verifies = bool(overrides.pop("switches_in_program", False))
    switched = bool(overrides.pop("switched", False))
    applied = applied or phase
    reached_deploy = applied in (Phase.DEPLOY, Phase.RETURN)
    taken = overrides.pop("taken", reached_deploy)
    changed = bool(overrides.pop("changed", False))
    settings = phase_settings(phase, point=POINT, **overrides)
    proof = RestorePointTaken(POINT, 1.7e9, "ab12") if taken else None
    return StackState(
        settings,
        applied,
        awaiting,
        proof,
        changed,
        switches_in_program=verifies,
        switched_to_clone=switched,
    )


def test_deploy_starts_with_a_clone_and_records_the_mode() -> None:
    change = plan(Action.DEPLOY, state(Phase.IDLE), version="v2", mode=Mode.READ_ONLY)
    assert change["phase"] == Phase.CLONE and change["targetVersion"] == "v2"
    assert change["mode"] == Mode.READ_ONLY and change["acceptDataLoss"] == "false"


@pytest.mark.parametrize("phase", [Phase.CLONE, Phase.CUTOVER, Phase.DEPLOY, Phase.RETURN])
def test_a_second_deployment_is_refused(phase: Phase) -> None:
    with pytest.raises(Refused, match="already in progress"):
        plan(Action.DEPLOY, state(phase), version="v3")


def test_rollforward_migrates_to_the_new_version() -> None:
    change = plan(
        Action.ROLLFORWARD, state(Phase.DEPLOY, target_version="v3-unhealthy"), version="v2"
    )
    # The restore point taken before the first deploy stays the one a rollback restores to.
    assert change == {
        "phase": Phase.DEPLOY,
        "targetVersion": "v2",
        "migrateTo": None,
        "awaitApproval": None,
    }


def test_rollforward_from_cutover_takes_no_restore_point_before_the_drain() -> None:
    # The primary has not been drained yet: the config only names the new version, and the step
    # to deploy (behind the drain gate) takes the restore point, as in a deployment.
    change = plan(Action.ROLLFORWARD, state(Phase.CUTOVER), version="v3")
    assert change == {"targetVersion": "v3", "migrateTo": None, "awaitApproval": None}
    assert next_step(state(Phase.CUTOVER, target_version="v3")) == {"phase": Phase.DEPLOY}


def test_rollback_code_only_keeps_the_schema_the_database_has() -> None:
    change = plan(Action.ROLLBACK_CODE, state(Phase.DEPLOY))
    assert change["targetVersion"] == "v1" and change["migrateTo"] == "v2"
    assert "databaseGeneration" not in change


def test_rollback_with_database_restores_a_new_generation_from_the_restore_point() -> None:
    change = plan(Action.ROLLBACK_DATABASE, state(Phase.DEPLOY, database_generation=1))
    assert change["databaseGeneration"] == "2"
    assert change["restoredFrom"] == "2026-01-01T00:00:00Z"
    assert change["targetVersion"] == "v1" and change["migrateTo"] == "v1"


@pytest.mark.parametrize(
    ("action", "current", "message"),
    [
        (Action.ROLLBACK_CODE, state(Phase.IDLE), "no deployment in progress"),
        (Action.ROLLBACK_DATABASE, state(Phase.IDLE), "no deployment in progress"),
        (Action.ROLLBACK_CODE, state(Phase.CLONE), "needs the traffic on the clone"),
        (Action.ROLLBACK_DATABASE, state(Phase.RETURN), "needs the traffic on the clone"),
        (Action.ROLLBACK_CODE, state(Phase.CUTOVER), "use `zdd abort`"),
        (Action.ABORT, state(Phase.IDLE), "nothing to abort"),
        (Action.ABORT, state(Phase.DEPLOY), "primary was already changed"),
        (Action.ABORT, state(Phase.RETURN), "primary was already changed"),
        (Action.COMPLETE, state(Phase.DEPLOY), "no deployment is awaiting approval"),
    ],
)
def test_refusals(action: Action, current: StackState, message: str) -> None:
    with pytest.raises(Refused, match=message):
        plan(action, current, version="v3")


def test_rollback_with_database_needs_a_restore_point() -> None:
    # Traffic on the clone, the primary's update under way, but no restore point recorded.
    broken = state(Phase.DEPLOY, Phase.CUTOVER, restore_point=None)
    with pytest.raises(Refused, match="no restore point"):
        plan(Action.ROLLBACK_DATABASE, broken)


def test_a_restore_point_named_in_config_but_never_taken_cannot_be_restored() -> None:
    # The driver set `deploy` and a restore point id, then died before the deploy update: the
    # config names a restore point, the state has none.
    never_taken = state(Phase.DEPLOY, Phase.CUTOVER, taken=False)
    with pytest.raises(Refused, match=r"no restore point was proven taken.*zdd abort"):
        plan(Action.ROLLBACK_DATABASE, never_taken)
    # ...and since no update changed the primary, abort gives it the traffic back (first, since
    # the traffic is on the clone, without deleting the clone).
    assert plan(Action.ABORT, never_taken)["phase"] == Phase.WITHDRAW


def test_a_proof_of_another_restore_point_does_not_count() -> None:
    other = StackState(
        state(Phase.DEPLOY).settings,
        Phase.DEPLOY,
        restore_point_taken=RestorePointTaken("rp-from-another-deployment", 1.7e9, "ab12"),
    )
    with pytest.raises(Refused, match=r"no restore point was proven taken.*--code-only"):
        plan(Action.ROLLBACK_DATABASE, other)


def test_a_deploy_update_that_got_past_the_restore_point_counts_as_touching_the_primary() -> None:
    failed_midway = state(Phase.DEPLOY, Phase.CUTOVER, taken=True, changed=True)
    with pytest.raises(Refused, match="primary was already changed"):
        plan(Action.ABORT, failed_midway)
    change = plan(Action.ROLLBACK_DATABASE, failed_midway)
    assert change["restoredFrom"] == POINT


@pytest.mark.parametrize(
    "record",
    [
        None,
        "2026-01-01T00:00:00Z",
        {"restore_point": POINT},
        {"restore_point": POINT, "taken_at": 0, "digest": "ab"},
        {"restore_point": POINT, "taken_at": 1.7e9, "digest": ""},
        {"restore_point": "", "taken_at": 1.7e9, "digest": "ab"},
    ],
)
def test_an_incomplete_record_is_no_proof(record: object) -> None:
    assert RestorePointTaken.from_record(record) is None


def test_a_complete_record_is_a_proof() -> None:
    record = {"restore_point": POINT, "taken_at": 1.7e9, "digest": "ab12", "backup_path": "/x"}
    assert RestorePointTaken.from_record(record) == RestorePointTaken(POINT, 1.7e9, "ab12")


def test_abort_before_the_switch_removes_the_clone_at_once() -> None:
    change = plan(Action.ABORT, state(Phase.CLONE))
    assert change["phase"] == Phase.IDLE and change["targetVersion"] is None


@pytest.mark.parametrize(
    ("phase", "applied"),
    [
        (Phase.CUTOVER, Phase.CUTOVER),
        # A cutover update that failed may have moved the route before it failed.
        (Phase.CUTOVER, Phase.CLONE),
        # A deploy update that failed before the restore point: traffic is on the clone.
        (Phase.DEPLOY, Phase.CUTOVER),
        # A driver that died in the middle of an abort.
        (Phase.WITHDRAW, Phase.CUTOVER),
        (Phase.WITHDRAW, Phase.WITHDRAW),
    ],
)
def test_abort_once_traffic_may_be_on_the_clone_withdraws_it_before_the_clone_goes(
    phase: Phase, applied: Phase
) -> None:
    current = state(phase, applied, taken=False)
    change = plan(Action.ABORT, current)
    # Traffic back to the primary with the clone kept; the read-only window's start is kept to
    # measure it up to the switch back.
    assert change["phase"] == Phase.WITHDRAW and change["targetVersion"] is None
    assert "cutoverAt" not in change
    # Only after that switch (and the gate behind it) does the clone go, on the same version.
    withdrawn = state(Phase.WITHDRAW, Phase.WITHDRAW, target_version=None)
    last = next_step(withdrawn)
    assert last["phase"] == Phase.IDLE and "currentVersion" not in last
    assert last["cutoverAt"] is None


def test_complete_clears_the_approval_pause_and_returns_the_traffic() -> None:
    assert plan(Action.COMPLETE, state(Phase.DEPLOY, awaiting=True)) == {
        "awaitApproval": None,
        "phase": Phase.RETURN,
    }


def test_next_steps_walk_the_deployment_and_finish_on_the_new_version() -> None:
    assert next_step(state(Phase.CLONE)) == {"phase": Phase.CUTOVER}
    # The restore point is the driver's to take, after the drain gate (tests/test_driver_steps.py).
    assert next_step(state(Phase.CUTOVER)) == {"phase": Phase.DEPLOY}
    assert next_step(state(Phase.DEPLOY)) == {"phase": Phase.RETURN}
    final = next_step(state(Phase.RETURN))
    assert final["phase"] == Phase.IDLE and final["currentVersion"] == "v2"
    assert final["databaseVersion"] is None and final["targetVersion"] is None
    after_code_rollback = next_step(state(Phase.RETURN, target_version="v1", migrate_to="v2"))
    assert after_code_rollback["databaseVersion"] == "v2"


def test_cutover_goes_straight_to_return_where_the_program_verifies_and_nobody_approves() -> None:
    verifying = state(Phase.CUTOVER, switches_in_program=True)
    assert next_step(verifying) == {"phase": Phase.RETURN}
    # Asked for approval: `deploy` stays a state of its own, where the person looks.
    waiting = state(Phase.CUTOVER, await_approval=True, switches_in_program=True)
    assert next_step(waiting) == {"phase": Phase.DEPLOY}


def test_a_return_from_cutover_cut_short_leaves_the_traffic_on_the_clone_for_a_recovery() -> None:
    # Its switch back comes last: until the update finished, recoveries act as after `deploy`.
    cut_short = state(Phase.RETURN, Phase.CUTOVER, changed=True, taken=True)
    assert cut_short.traffic_on_clone and cut_short.primary_touched
    change = plan(Action.ROLLBACK_CODE, cut_short)
    assert change["phase"] == Phase.DEPLOY and change["targetVersion"] == "v1"
    # A return that followed `deploy` switched: the clone no longer holds the traffic.
    assert not state(Phase.RETURN, Phase.DEPLOY).traffic_on_clone


def test_clone_goes_straight_to_return_where_the_program_switches_and_nobody_approves() -> None:
    assert next_step(state(Phase.CLONE, switches_in_program=True)) == {"phase": Phase.RETURN}
    waiting = state(Phase.CLONE, await_approval=True, switches_in_program=True)
    assert next_step(waiting) == {"phase": Phase.CUTOVER}
    assert next_step(state(Phase.CLONE)) == {"phase": Phase.CUTOVER}


def test_an_update_out_of_clone_cut_short_after_its_switch_leaves_the_clone_the_traffic() -> None:
    # Before its switch: the primary kept the traffic and was not touched; abort goes straight
    # to `withdraw` (the front door's own update moves the traffic back where it went).
    before = state(Phase.RETURN, Phase.CLONE, taken=False, switches_in_program=True)
    assert not before.traffic_on_clone and not before.primary_touched
    assert plan(Action.ABORT, before)["phase"] == Phase.WITHDRAW
    with pytest.raises(Refused, match="needs the traffic on the clone"):
        plan(Action.ROLLFORWARD, before, version="v3")
    # After its switch, before its restore point: recoveries may act, abort still may.
    switched = state(Phase.RETURN, Phase.CLONE, taken=False, switched=True)
    assert switched.traffic_on_clone and not switched.primary_touched
    assert plan(Action.ABORT, switched)["phase"] == Phase.WITHDRAW
    # Past its restore point: as after a failed `deploy`.
    changed = state(Phase.RETURN, Phase.CLONE, taken=True, changed=True, switched=True)
    assert changed.traffic_on_clone and changed.primary_touched
    assert plan(Action.ROLLBACK_CODE, changed)["phase"] == Phase.DEPLOY
    with pytest.raises(Refused, match="already changed"):
        plan(Action.ABORT, changed)


def test_digest_follows_only_the_keys_that_decide_what_exists() -> None:
    base = {"phase": "idle", "currentVersion": "v1", "stateDir": "/a"}
    assert settings_digest(base) == settings_digest({**base, "stateDir": "/b", "cutoverAt": "1"})
    assert settings_digest(base) != settings_digest({**base, "phase": "clone"})
