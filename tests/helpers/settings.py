"""Phase settings as a stack has them: one builder, and the scenarios (phases and recoveries)
the programs are declared in under mocks."""

from __future__ import annotations

from typing import Any

from zdd.phases import Phase, PhaseSettings

# The driver records the point in time itself, as Azure takes it (an ISO timestamp).
RESTORE_POINT = "2025-03-01T10:15:00Z"
LATER_RESTORE_POINT = "2025-04-02T08:00:00Z"  # a later deployment's


def phase_settings(phase: Phase, *, point: str = RESTORE_POINT, **overrides: Any) -> PhaseSettings:
    """A stack in `phase` of a deployment from v1 to v2: its restore point is `point` from
    deploy on (the driver sets it before the first change to the primary); `overrides` (any
    `PhaseSettings` field, `restore_point` too) win."""
    values: dict[str, Any] = {"phase": phase, "current_version": "v1"}
    if phase is not Phase.IDLE:
        values["target_version"] = "v2"
    if phase in (Phase.DEPLOY, Phase.RETURN):
        values["restore_point"] = point
    values.update(overrides)
    return PhaseSettings(**values)


def restored(restore_point: str = RESTORE_POINT) -> dict[str, Any]:
    """The overrides of a primary database restored (generation 2) from `restore_point`."""
    return {"database_generation": 2, "restored_from": restore_point}


RESTORED = restored()
SCENARIOS: dict[str, PhaseSettings] = {
    "idle": phase_settings(Phase.IDLE),
    "clone": phase_settings(Phase.CLONE),
    "cutover": phase_settings(Phase.CUTOVER),
    "deploy": phase_settings(Phase.DEPLOY),
    "return": phase_settings(Phase.RETURN),
    "idle-after": phase_settings(Phase.IDLE, current_version="v2"),
    # An abort from cutover, on its way back: traffic on the untouched primary, clone kept.
    "withdraw": phase_settings(Phase.WITHDRAW, target_version=None),
    # Recoveries, while traffic is on the clone.
    "rollforward": phase_settings(Phase.DEPLOY, target_version="v3"),
    "rollback-code": phase_settings(Phase.DEPLOY, target_version="v1", migrate_to="v2"),
    "idle-after-rollback-code": phase_settings(Phase.IDLE, database_version="v2"),
    "rollback-database": phase_settings(
        Phase.DEPLOY, target_version="v1", migrate_to="v1", **RESTORED
    ),
    "return-after-rollback-database": phase_settings(
        Phase.RETURN, target_version="v1", migrate_to="v1", **RESTORED
    ),
    "idle-after-rollback-database": phase_settings(Phase.IDLE, **RESTORED),
    # The next deployment, on the restored generation.
    "clone-on-generation-2": phase_settings(Phase.CLONE, **RESTORED),
    "deploy-on-generation-2": phase_settings(Phase.DEPLOY, point=LATER_RESTORE_POINT, **RESTORED),
}
