"""The phase model: what exists in each phase, and which moves are legal."""

from __future__ import annotations

import re

import pytest

from tests.helpers.settings import phase_settings
from zdd.phases import (
    DatabaseMode,
    EdgeWrites,
    IllegalTransition,
    Instance,
    InvalidStackConfig,
    Mode,
    Phase,
    PhaseSettings,
    check_operational_config,
    check_transition,
    declare,
    is_valid_version,
    next_phase,
)

# phase -> (primary version, clone present, traffic)
TABLE = {
    Phase.IDLE: ("v1", False, Instance.PRIMARY),
    Phase.CLONE: ("v1", True, Instance.PRIMARY),
    Phase.CUTOVER: ("v1", True, Instance.CLONE),
    Phase.DEPLOY: ("v2", True, Instance.CLONE),
    Phase.RETURN: ("v2", True, Instance.PRIMARY),
    # An abort on its way back: the untouched primary has the traffic, the clone is kept.
    Phase.WITHDRAW: ("v1", True, Instance.PRIMARY),
}


def settings(phase: Phase, **overrides: object) -> PhaseSettings:
    return phase_settings(phase, point="rp1", **overrides)


@pytest.mark.parametrize("phase", list(TABLE))
def test_each_phase_declares_the_design_table(phase: Phase) -> None:
    version, has_clone, traffic = TABLE[phase]
    declaration = declare(settings(phase))
    assert declaration.primary.version == version
    assert declaration.has_clone is has_clone
    assert declaration.traffic is traffic
    assert declaration.primary.database_mode is DatabaseMode.READ_WRITE


@pytest.mark.parametrize("phase", [p for p in TABLE if p is not Phase.IDLE])
def test_clone_runs_current_version_read_only_by_default(phase: Phase) -> None:
    clone = declare(settings(phase)).clone
    assert clone is not None
    assert clone.version == "v1"
    assert clone.database is Instance.CLONE
    assert clone.database_mode is DatabaseMode.READ_ONLY


# phase -> what the front door does with a write: read-only, with approval, hold 0, read-write
WRITES = {
    Phase.IDLE: ("passed", "passed", "passed", "passed"),
    Phase.CLONE: ("held", "held", "refused", "passed"),
    Phase.CUTOVER: ("held", "held", "refused", "passed"),
    Phase.DEPLOY: ("held", "refused", "refused", "passed"),
    Phase.RETURN: ("passed", "passed", "passed", "passed"),
    Phase.WITHDRAW: ("passed", "passed", "passed", "passed"),
}


@pytest.mark.parametrize("phase", list(WRITES))
def test_writes_wait_from_the_copy_until_the_primary_serves_again(phase: Phase) -> None:
    read_only, approval, no_hold, read_write = map(EdgeWrites, WRITES[phase])
    assert declare(settings(phase)).edge_writes is read_only
    assert declare(settings(phase, await_approval=True)).edge_writes is approval
    assert declare(settings(phase, hold_writes_seconds=0.0)).edge_writes is no_hold
    rw = settings(phase, mode=Mode.READ_WRITE, accept_data_loss=True)
    assert declare(rw).edge_writes is read_write


def test_the_hold_is_read_from_config_and_bounded() -> None:
    base = {"currentVersion": "v1"}
    assert PhaseSettings.from_config(base).hold_writes_seconds == 30
    assert PhaseSettings.from_config({**base, "holdWritesSeconds": "0"}).hold_writes_seconds == 0
    for bad in ("-1", "soon", "3601"):
        with pytest.raises(InvalidStackConfig, match="holdWritesSeconds"):
            PhaseSettings.from_config({**base, "holdWritesSeconds": bad})


def test_clone_is_read_write_only_with_acknowledgement() -> None:
    rw = settings(Phase.CLONE, mode=Mode.READ_WRITE, accept_data_loss=True)
    clone = declare(rw).clone
    assert clone is not None and clone.database_mode is DatabaseMode.READ_WRITE
    with pytest.raises(InvalidStackConfig, match="acceptDataLoss"):
        declare(settings(Phase.CLONE, mode=Mode.READ_WRITE))


def test_deploy_without_restore_point_is_refused() -> None:
    with pytest.raises(InvalidStackConfig, match="restore point"):
        declare(settings(Phase.DEPLOY, restore_point=None))


def test_database_schema_can_differ_from_code_version() -> None:
    # Roll back code only: the app goes back, the database keeps the schema it was migrated to.
    rollback = settings(Phase.DEPLOY, target_version="v1", migrate_to="v2")
    declaration = declare(rollback)
    assert declaration.primary.version == "v1"
    assert declaration.primary_database_version == "v2"
    # ...and after it, outside a deployment, the database is known to carry v2's schema.
    after = declare(settings(Phase.IDLE, current_version="v1", database_version="v2"))
    assert after.primary_database_version == "v2"
    # A new deployment migrates to its target, whatever the database carried before.
    again = declare(settings(Phase.DEPLOY, current_version="v1", database_version="v2"))
    assert again.primary_database_version == "v2"
    assert declare(settings(Phase.DEPLOY, target_version="v3")).primary_database_version == "v3"


def test_new_database_generation_needs_its_restore_point() -> None:
    with pytest.raises(InvalidStackConfig, match="restoredFrom"):
        declare(settings(Phase.DEPLOY, database_generation=2))
    restored = declare(settings(Phase.DEPLOY, database_generation=2, restored_from="rp1"))
    assert restored.restored_from == "rp1" and restored.primary_database_generation == 2


def test_idle_has_no_restore_point_even_if_config_keeps_one() -> None:
    assert declare(settings(Phase.IDLE, restore_point="rp1")).restore_point is None


@pytest.mark.parametrize(
    ("current", "requested"),
    [
        (Phase.IDLE, Phase.CLONE),
        (Phase.CLONE, Phase.CUTOVER),
        (Phase.CUTOVER, Phase.DEPLOY),
        (Phase.DEPLOY, Phase.RETURN),
        (Phase.RETURN, Phase.IDLE),
        (Phase.CLONE, Phase.IDLE),
        (Phase.CLONE, Phase.WITHDRAW),
        (Phase.CUTOVER, Phase.WITHDRAW),
        (Phase.WITHDRAW, Phase.IDLE),
        (Phase.DEPLOY, Phase.DEPLOY),
    ],
)
@pytest.mark.parametrize("switches_in_program", [False, True])
def test_legal_transitions(current: Phase, requested: Phase, switches_in_program: bool) -> None:
    check_transition(current, requested, switches_in_program=switches_in_program)


@pytest.mark.parametrize(
    ("current", "requested"),
    [(Phase.CLONE, Phase.RETURN), (Phase.CLONE, Phase.DEPLOY), (Phase.CUTOVER, Phase.RETURN)],
)
def test_moves_past_cutover_or_deploy_only_where_the_program_switches(
    current: Phase, requested: Phase
) -> None:
    check_transition(current, requested, switches_in_program=True)
    # Elsewhere the clone must hold the traffic (a phase of its own, after its gate) before
    # the primary changes, and the primary must be verified before it gets it back.
    with pytest.raises(IllegalTransition, match="cannot"):
        check_transition(current, requested, switches_in_program=False)


def test_a_program_that_switches_declares_the_switch_wherever_the_clone_held_the_traffic() -> None:
    held = {Phase.CUTOVER, Phase.DEPLOY, Phase.RETURN}
    for phase in Phase:
        declared = declare(
            settings(phase, restore_point="rp1" if phase in (Phase.DEPLOY, Phase.RETURN) else None)
        )
        assert (declared.cutover_writes is not None) == (phase in held), phase
    # `return` lets writes pass, but its switch to the clone holds them as `cutover` does.
    returning = declare(settings(Phase.RETURN, restore_point="rp1"))
    assert returning.edge_writes is EdgeWrites.PASS
    assert returning.cutover_writes is EdgeWrites.HOLD


@pytest.mark.parametrize(
    ("current", "requested", "message"),
    [
        (Phase.IDLE, Phase.RETURN, "not been deployed and verified"),
        (Phase.DEPLOY, Phase.IDLE, "primary was changed"),
        # The clone holds the traffic: deleting it in one update would cut visitors off.
        (Phase.CUTOVER, Phase.IDLE, "withdraw"),
        (Phase.DEPLOY, Phase.WITHDRAW, "cannot move"),
        (Phase.WITHDRAW, Phase.CUTOVER, "cannot move"),
        (Phase.DEPLOY, Phase.CLONE, "already in progress"),
        (Phase.IDLE, Phase.DEPLOY, "cannot move"),
        (Phase.IDLE, Phase.CUTOVER, "cannot move"),
    ],
)
def test_illegal_transitions_are_refused_with_a_reason(
    current: Phase, requested: Phase, message: str
) -> None:
    with pytest.raises(IllegalTransition, match=message):
        check_transition(current, requested, switches_in_program=True)


def test_withdraw_keeps_the_read_only_clone_and_ends_in_idle() -> None:
    declaration = declare(settings(Phase.WITHDRAW, target_version=None))
    assert declaration.clone is not None
    assert declaration.clone.database_mode is DatabaseMode.READ_ONLY
    assert next_phase(Phase.WITHDRAW) is Phase.IDLE


def test_next_phase_walks_the_deployment_order() -> None:
    walked = [Phase.IDLE]
    while len(walked) < 6:
        walked.append(next_phase(walked[-1]))
    assert " -> ".join(walked) == "idle -> clone -> cutover -> deploy -> return -> idle"


@pytest.mark.parametrize(
    "version", ["v1", "v3-unhealthy", "v10.2", "2.9.2", "V1", "latest", "1.0_rc1", "a" * 64]
)
def test_valid_versions(version: str) -> None:
    assert is_valid_version(version)


# A version names a release folder: nothing that could leave it or mean something to a shell.
@pytest.mark.parametrize(
    "version", ["", "v2;rm", "../x", "..", ".hidden", "-v1", "v1 ", "v1\n", "a/b", "a" * 65]
)
def test_malformed_versions(version: str) -> None:
    assert not is_valid_version(version)


def test_from_config_reads_and_validates() -> None:
    s = PhaseSettings.from_config(
        {"phase": "deploy", "currentVersion": "v1", "targetVersion": "v2", "restorePoint": "r"}
    )
    assert s.phase is Phase.DEPLOY and s.target_version == "v2"
    with pytest.raises(InvalidStackConfig, match="zdd:phase 'bogus'"):
        PhaseSettings.from_config({"phase": "bogus", "currentVersion": "v1"})
    with pytest.raises(InvalidStackConfig, match="currentVersion is not set"):
        PhaseSettings.from_config({"phase": "idle"})
    with pytest.raises(InvalidStackConfig, match="whole number"):
        PhaseSettings.from_config({"currentVersion": "v1", "databaseGeneration": "x"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateTimeoutSeconds": "soon"}, "zdd:gateTimeoutSeconds 'soon' must be a number"),
        ({"gateTimeoutSeconds": "0"}, "from 1 to 86400"),
        ({"archiveRetention": "0"}, "zdd:archiveRetention '0' must be a whole number from 1"),
        ({"archiveRetention": "2.5"}, "whole number"),
        ({"basePort": "80"}, "zdd:basePort '80' must be a whole number from 1024"),
        ({"basePort": "70000"}, "to 65531"),
    ],
)
def test_malformed_tuning_keys_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidStackConfig, match=re.escape(message)):
        check_operational_config(values)


def test_wellformed_tuning_keys_pass() -> None:
    check_operational_config(
        {"gateTimeoutSeconds": "6", "archiveRetention": "1", "basePort": "20000"}
    )


@pytest.mark.parametrize("point", ["../../etc/passwd", "rp/1", "", " rp", "x" * 65])
def test_a_restore_point_id_that_could_leave_its_folder_is_refused(point: str) -> None:
    config = {"phase": "deploy", "currentVersion": "v1", "targetVersion": "v2"}
    with pytest.raises(InvalidStackConfig, match=r"restore point id|needs zdd:restorePoint"):
        PhaseSettings.from_config({**config, "restorePoint": point})
