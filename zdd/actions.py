"""What each driver action changes in the stack config, and when it is legal. Pure: no I/O.

An action is a config change; the driver then takes the steps (`pulumi up` per phase, with
gates) until the stack is idle again or waits for approval. Every refusal happens here, before
anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from zdd.phases import (
    SWITCHED_TO_CLONE,
    TRAFFIC_ON_CLONE,
    IllegalTransition,
    Mode,
    Phase,
    PhaseSettings,
    RestorePointTaken,
    Strategy,
    next_phase,
    restored_in_deployment,
)

ConfigChange = dict[str, str | None]


class Action(StrEnum):
    DEPLOY = "deploy"
    ROLLFORWARD = "rollforward"
    ROLLBACK_CODE = "rollback-code-only"
    ROLLBACK_DATABASE = "rollback-with-database"
    ABORT = "abort"
    COMPLETE = "complete"


# Not an `Action` of a deployment: replacing the site's app spec (`zdd app set`) while none is
# under way, recorded in the history under this name.
APP_SET = "app-set"

RECOVERY_HINT = (
    "traffic stays on the clone; recover with `zdd rollforward --version V`, "
    "`zdd rollback --code-only` or `zdd rollback --with-database` (each takes --preview)"
)


def new_restore_point_id(now: datetime | None = None) -> str:
    """An id that is also the point in time (UTC, ISO 8601) an Azure restore goes back to."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StackState:
    """What the driver knows: the config it set and what the stack's updates applied."""

    settings: PhaseSettings
    applied: Phase
    awaiting_approval: bool = False
    # Read from the state, never from config: the restore point an update really took, and
    # whether an update may have changed the primary (it got past the restore point).
    restore_point_taken: RestorePointTaken | None = None
    primary_changed: bool = False
    # After a deploy update that failed: the schema its state proves the primary database
    # carries (the last migration that succeeded), so no recovery runs the failed one again.
    schema_applied: str | None = None
    # The stack's target switches to the clone (after the drain) and back (after verifying the
    # new primary) in its program: a deployment that asks for no approval goes from `clone`
    # straight to `return`.
    switches_in_program: bool = False
    # Read from the state after an update out of `clone` that did not finish: its switch to
    # the clone was made (the cutover resource is there), so the clone holds the traffic.
    switched_to_clone: bool = False

    @property
    def in_progress(self) -> bool:
        return self.settings.phase is not Phase.IDLE or self.applied is not Phase.IDLE

    @property
    def traffic_on_clone(self) -> bool:
        # A `return` that deploys the primary and did not finish switched nothing back: its
        # switch comes last, after the primary's migration and verification.
        returning = self.settings.phase is Phase.RETURN and self.applied is Phase.CUTOVER
        if self.applied is Phase.CLONE:
            # An update out of `clone` that began with the switch to the clone.
            return self.switched_to_clone and self.settings.phase in SWITCHED_TO_CLONE
        return self.applied in TRAFFIC_ON_CLONE and (
            self.settings.phase in TRAFFIC_ON_CLONE or returning
        )

    @property
    def primary_touched(self) -> bool:
        return self.primary_changed or self.applied in (Phase.DEPLOY, Phase.RETURN)

    @property
    def proven_restore_point(self) -> RestorePointTaken | None:
        """The restore point a rollback with database may use: taken, and the one configured."""
        taken = self.restore_point_taken
        return taken if taken is not None and taken.id == self.settings.restore_point else None


class Refused(IllegalTransition):
    """The action is not legal now; nothing was changed."""


@dataclass(frozen=True)
class _Asked:
    """What the operator gave with the action (the CLI's or the API's options)."""

    version: str | None
    mode: Mode
    accept_data_loss: bool
    strategy: Strategy
    wait_for_approval: bool

    @property
    def approval(self) -> ConfigChange:
        return {"awaitApproval": "true" if self.wait_for_approval else None}


def plan(
    action: Action,
    state: StackState,
    *,
    version: str | None = None,
    mode: Mode = Mode.READ_ONLY,
    accept_data_loss: bool = False,
    wait_for_approval: bool = False,
    strategy: Strategy = Strategy.CLONE,
) -> ConfigChange:
    """The config change that starts `action`, or Refused with what to do instead."""
    planner = _PLANNERS.get(action)
    if planner is None:
        raise Refused(f"unknown action {action}")
    return planner(state, _Asked(version, mode, accept_data_loss, strategy, wait_for_approval))


def _deploy(state: StackState, asked: _Asked) -> ConfigChange:
    if state.in_progress:
        raise Refused(
            f"a deployment is already in progress (phase {state.settings.phase}); "
            "use `zdd resume`, `zdd complete` or a recovery"
        )
    assert asked.version is not None
    return {
        "phase": Phase.CLONE,
        "targetVersion": asked.version,
        "mode": asked.mode,
        "acceptDataLoss": "true" if asked.accept_data_loss else "false",
        "strategy": asked.strategy if asked.strategy is not Strategy.CLONE else None,
        # A rehearsal that was stopped leaves its key: the deployment's clone replaces it.
        "rehearse": None,
        **asked.approval,
    }


def _abort(state: StackState, _: _Asked) -> ConfigChange:
    if not state.in_progress:
        raise Refused("no deployment in progress; nothing to abort")
    if state.primary_touched:
        raise Refused(
            "the primary was already changed, so abort cannot give it the traffic back; "
            "use `zdd rollback --code-only` or `zdd rollback --with-database`"
        )
    if {state.settings.phase, state.applied} <= {Phase.IDLE, Phase.CLONE}:
        # The switch was never asked for: the clone can go at once.
        return {"phase": Phase.IDLE, **_deployment_cleared()}
    # The traffic may be on the clone: it moves back to the primary first, and the clone
    # goes only once no request reaches it (the read-only window ends with that switch).
    return {"phase": Phase.WITHDRAW, **_target_cleared()}


def _complete(state: StackState, _: _Asked) -> ConfigChange:
    if not state.awaiting_approval:
        raise Refused("no deployment is awaiting approval")
    # Straight on to `return`: the gate before it verifies the primary again.
    return {"awaitApproval": None, "phase": Phase.RETURN}


# The recoveries: legal only while the clone holds the traffic.


def _recovering(state: StackState, action: Action) -> PhaseSettings:
    """The settings of a deployment a recovery may act on: the clone holds the traffic."""
    s = state.settings
    if not state.in_progress:
        raise Refused(f"no deployment in progress; nothing to {action}")
    if not state.traffic_on_clone:
        raise Refused(
            f"{action} needs the traffic on the clone (phases cutover or deploy); "
            f"the stack is in phase {s.phase}"
        )
    assert s.target_version is not None
    return s


def _primary_was_touched(state: StackState, action: Action) -> None:
    if not state.primary_touched:
        raise Refused(f"nothing was deployed to the primary yet; use `zdd abort`, not {action}")


def _rollforward(state: StackState, asked: _Asked) -> ConfigChange:
    s = _recovering(state, Action.ROLLFORWARD)
    version = asked.version
    assert version is not None
    if version == s.target_version and state.primary_touched:
        raise Refused(f"{version} is already deployed to the primary; pick another version")
    if s.phase is Phase.CUTOVER:
        # No restore point yet: the step to `deploy` takes one after the drain gate, as
        # for a deployment, never before it.
        return {"targetVersion": version, "migrateTo": None, **asked.approval}
    return {"phase": Phase.DEPLOY, "targetVersion": version, "migrateTo": None, **asked.approval}


def _rollback_code(state: StackState, asked: _Asked) -> ConfigChange:
    s = _recovering(state, Action.ROLLBACK_CODE)
    _primary_was_touched(state, Action.ROLLBACK_CODE)
    return {
        "phase": Phase.DEPLOY,
        "targetVersion": s.current_version,
        # The schema the primary database carries now.
        "migrateTo": state.schema_applied or s.migrate_to or s.target_version,
        **asked.approval,
    }


def _rollback_database(state: StackState, asked: _Asked) -> ConfigChange:
    s = _recovering(state, Action.ROLLBACK_DATABASE)
    if state.proven_restore_point is None:
        instead = (
            "`zdd rollback --code-only` keeps the database as it is"
            if state.primary_touched
            else "the primary is untouched: `zdd abort` gives it the traffic back"
        )
        raise Refused(
            "no restore point was proven taken (no update of this stack recorded one with its "
            f"time and digest), so there is nothing to restore from; {instead}"
        )
    _primary_was_touched(state, Action.ROLLBACK_DATABASE)
    if s.strategy is Strategy.COMPATIBLE and restored_in_deployment(s):
        raise Refused(
            "the primary database was already restored from this deployment's restore point "
            "while the current release kept serving the one before; use "
            "`zdd rollback --code-only` or `zdd rollforward`"
        )
    return {
        "phase": Phase.DEPLOY,
        "targetVersion": s.current_version,
        "databaseGeneration": str(s.database_generation + 1),
        "restoredFrom": s.restore_point,
        # The restored database carries what it carried before the deployment.
        "migrateTo": s.database_version or s.current_version,
        **asked.approval,
    }


_PLANNERS: dict[Action, Callable[[StackState, _Asked], ConfigChange]] = {
    Action.DEPLOY: _deploy,
    Action.ABORT: _abort,
    Action.COMPLETE: _complete,
    Action.ROLLFORWARD: _rollforward,
    Action.ROLLBACK_CODE: _rollback_code,
    Action.ROLLBACK_DATABASE: _rollback_database,
}


def _target_cleared() -> ConfigChange:
    return {"targetVersion": None, "restorePoint": None, "migrateTo": None, "awaitApproval": None}


def plan_app_change(state: StackState, app: str) -> ConfigChange:
    """The config change that replaces the stack's app spec (`zdd:app`, as JSON): legal while
    no deployment is under way, which includes a stack whose `init` failed (its config is idle,
    and no update applied anything else)."""
    if state.in_progress:
        raise Refused(
            f"a deployment is in progress (phase {state.settings.phase}, applied "
            f"{state.applied}); finish it first (`zdd resume`, `zdd complete` or a recovery), "
            "then change the app spec"
        )
    return {"app": app}


def _deployment_cleared() -> ConfigChange:
    return {**_target_cleared(), "cutoverAt": None, "strategy": None}


def next_step(state: StackState) -> ConfigChange:
    """The config change that moves a completed phase on to the next one. The step that
    deploys the primary also needs a new restore point, which only the driver names (after the
    drain gate, or before the update whose switch waits for the drain; on the target's clock):
    see `zdd.driver.Driver.advance`."""
    s = state.settings
    if s.phase is Phase.IDLE:
        raise IllegalTransition(f"nothing follows phase {s.phase}")
    if (
        s.phase in (Phase.CLONE, Phase.CUTOVER)
        and state.switches_in_program
        and not s.await_approval
    ):
        # One update switches to the clone, waits for the drain, takes the restore point,
        # migrates, deploys and verifies the primary, then switches back to it: the read-only
        # window holds no engine start (docs/design.md).
        return {"phase": Phase.RETURN}
    following = next_phase(s.phase)
    if s.phase is Phase.WITHDRAW:
        return {"phase": following, **_deployment_cleared()}
    if following is Phase.IDLE:
        assert s.target_version is not None
        schema = s.migrate_to or s.target_version
        return {
            "phase": following,
            "currentVersion": s.target_version,
            "databaseVersion": schema if schema != s.target_version else None,
            **_deployment_cleared(),
        }
    return {"phase": following}
