"""The driver: moves a stack from phase to phase with the gates of the design between them.

Everything the driver needs to continue lives in the stack: `zdd:phase` says where it is going,
the `phase` output says where the last completed update left it. `advance` looks at both and
does the one next step, so a driver that died anywhere continues with `zdd resume`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zdd import gates
from zdd.environment import Environment
from zdd.errors import BadInput, RefusedTransition
from zdd.phases import (
    DatabaseMode,
    Instance,
    Mode,
    Phase,
    StackSettings,
    check_transition,
    next_phase,
)
from zdd.stack import Stack
from zdd.targets import TargetOps, check_version, ops_for

Say = Callable[[str], None]


@dataclass
class PhaseTiming:
    name: str
    seconds: float


@dataclass
class Status:
    stack: str
    target: str
    phase: str
    applied_phase: str | None
    current_version: str
    target_version: str | None
    traffic: str
    mode: str
    deployment_in_progress: bool
    read_only_window_seconds: float | None
    public_url: str | None
    preview_url: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class DeployResult:
    outcome: str
    stack: str
    from_version: str
    to_version: str
    mode: str
    phases: list[PhaseTiming] = field(default_factory=list)
    read_only_window_seconds: float | None = None
    probe: dict[str, Any] | None = None
    window: tuple[float, float] | None = None  # epoch seconds of cutover and return

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "outcome": self.outcome,
            "stack": self.stack,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "mode": self.mode,
            "phases": [{"name": p.name, "seconds": round(p.seconds, 2)} for p in self.phases],
            "read_only_window_seconds": (
                round(self.read_only_window_seconds, 2)
                if self.read_only_window_seconds is not None
                else None
            ),
            "traffic_on_clone": list(self.window) if self.window else None,
        }
        if self.probe is not None:
            result["probe"] = self.probe
        return result


def _restore_point_id() -> str:
    return "rp-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


class Driver:
    def __init__(self, env: Environment, stack_name: str, say: Say = lambda _: None) -> None:
        self.env = env
        self.stack_name = stack_name
        self.say = say
        self._stack: Stack | None = None
        self._gate_passed: Phase | None = None

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            self._stack = Stack.select(self.env, self.stack_name)
        return self._stack

    # -- reading the stack ---------------------------------------------------------------

    def _read(self) -> tuple[dict[str, str], StackSettings, dict[str, Any], TargetOps]:
        config = self.stack.config()
        try:
            settings = StackSettings.from_config(config)
        except ValueError as exc:
            raise BadInput(f"stack {self.stack_name!r}: {exc}") from None
        return config, settings, self.stack.outputs(), ops_for(config.get("target", "local"))

    def status(self) -> Status:
        config, settings, outputs, ops = self._read()
        applied = outputs.get("phase")
        cutover_at = config.get("cutoverAt")
        window = None
        if cutover_at and settings.phase in (Phase.CUTOVER, Phase.DEPLOY):
            window = time.time() - float(cutover_at)
        return Status(
            stack=self.stack_name,
            target=ops.name,
            phase=str(settings.phase),
            applied_phase=applied,
            current_version=settings.current_version,
            target_version=settings.target_version,
            traffic=outputs.get("traffic", "primary"),
            mode=str(settings.mode),
            deployment_in_progress=settings.phase is not Phase.IDLE or applied != Phase.IDLE,
            read_only_window_seconds=window,
            public_url=outputs.get("public_url"),
            preview_url=outputs.get("preview_url"),
        )

    # -- init / destroy ------------------------------------------------------------------

    def init(self, target: str, version: str) -> Status:
        ops = ops_for(target)
        check_version(version, ops)
        if Stack.exists(self.env, self.stack_name):
            raise BadInput(f"stack {self.stack_name!r} already exists; use it, or destroy it first")
        self._stack = Stack.create(self.env, self.stack_name)
        self.stack.set_config(
            {
                "target": target,
                "phase": Phase.IDLE,
                "currentVersion": version,
                **ops.initial_config(self.env, self.stack_name),
            }
        )
        self._up(Phase.IDLE, "init")
        return self.status()

    def destroy(self) -> None:
        self.say(f"destroying every resource of stack {self.stack_name}")
        state_dir = self.stack.config().get("stateDir")
        self.stack.destroy()
        self.stack.remove()
        if state_dir:  # logs and anything an interrupted update left in the local state folder
            shutil.rmtree(state_dir, ignore_errors=True)

    # -- deployment ----------------------------------------------------------------------

    def start_deployment(self, version: str, mode: Mode, accept_data_loss: bool) -> None:
        """Validate everything, then record the deployment in the stack config (no update yet)."""
        _config, settings, outputs, ops = self._read()
        check_version(version, ops)
        if settings.phase is not Phase.IDLE or outputs.get("phase") != Phase.IDLE:
            raise RefusedTransition(
                f"a deployment is already in progress on stack {self.stack_name!r} "
                f"(phase {settings.phase}); use `zdd resume` or a recovery"
            )
        if version == settings.current_version:
            raise BadInput(f"stack {self.stack_name!r} already runs {version}")
        if mode is Mode.READ_WRITE and not accept_data_loss:
            raise BadInput(
                "read-write mode needs --accept-data-loss: writes to the clone are not kept "
                "when it is destroyed"
            )
        check_transition(Phase.IDLE, Phase.CLONE)
        self.stack.set_config(
            {
                "phase": Phase.CLONE,
                "targetVersion": version,
                "mode": mode,
                "acceptDataLoss": "true" if accept_data_loss else "false",
            }
        )

    def run_to_completion(self, result: DeployResult) -> DeployResult:
        """Take every remaining step until the stack is idle again."""
        while self.advance(result):
            pass
        result.outcome = "succeeded"
        return result

    def advance(self, result: DeployResult) -> bool:
        """Do the one next step of the deployment in progress; False once it is complete."""
        _config, settings, outputs, ops = self._read()
        applied = Phase(outputs.get("phase", Phase.IDLE))
        wanted = settings.phase
        if wanted != applied:
            # The update towards `wanted` has not completed: its precondition, the update, and
            # the check that the next move needs, timed together as the phase.
            started = time.monotonic()
            self._gate_once(applied, settings, outputs, ops)
            self._up(wanted, str(wanted), result)
            self._gate_once(wanted, settings, self.stack.outputs(), ops)
            result.phases.append(PhaseTiming(str(wanted), time.monotonic() - started))
            return True
        if wanted is Phase.IDLE:
            return False
        self._gate_once(wanted, settings, outputs, ops)
        self._move_on(wanted, settings)
        return True

    def _gate_once(
        self, phase: Phase, settings: StackSettings, outputs: dict[str, Any], ops: TargetOps
    ) -> None:
        # A gate passed by this driver holds until the next update; one found in the stack
        # (after a restart) is checked again.
        if self._gate_passed is not phase:
            self._gate_after(phase, settings, outputs, ops)
            self._gate_passed = phase

    def _move_on(self, phase: Phase, settings: StackSettings) -> None:
        following = next_phase(phase)
        check_transition(phase, following)
        change: dict[str, str | None] = {"phase": following}
        if following is Phase.DEPLOY:
            change["restorePoint"] = _restore_point_id()
        if following is Phase.IDLE:
            assert settings.target_version is not None
            change.update(
                currentVersion=settings.target_version,
                targetVersion=None,
                restorePoint=None,
                mode=None,
                acceptDataLoss=None,
                cutoverAt=None,
                databaseVersion=None,
            )
        self.stack.set_config(change)

    def _up(self, phase: Phase, label: str, result: DeployResult | None = None) -> None:
        if phase is Phase.CUTOVER and "cutoverAt" not in self.stack.config():
            # The read-only window is measured from before the update that moves the traffic
            # to after the one that moves it back: an upper bound, never an underestimate.
            self.stack.set_config({"cutoverAt": f"{time.time():.3f}"})
        self.say(f"{label}: pulumi up")
        self._gate_passed = None
        outcome = self.stack.up()
        changed = {k: v for k, v in outcome.changes.items() if k != "same"}
        self.say(f"{label}: done in {outcome.seconds:.1f}s {changed or '(no changes)'}")
        now = time.time()
        if phase is Phase.RETURN and result is not None:
            cutover_at = self.stack.config().get("cutoverAt")
            if cutover_at:
                result.window = (float(cutover_at), now)
                result.read_only_window_seconds = now - float(cutover_at)

    # -- gates ---------------------------------------------------------------------------

    def _gate_after(
        self, phase: Phase, settings: StackSettings, outputs: dict[str, Any], ops: TargetOps
    ) -> None:
        """The check that must pass before anything moves on from `phase`."""
        target_version = settings.target_version or settings.current_version
        if phase is Phase.CLONE:
            mode = (
                DatabaseMode.READ_WRITE
                if settings.mode is Mode.READ_WRITE
                else DatabaseMode.READ_ONLY
            )
            self.say("gate: clone healthy with the current version")
            gates.wait_healthy(
                outputs["clone_url"],
                gates.Identity(settings.current_version, Instance.CLONE, mode),
                what="the clone",
            )
        elif phase is Phase.CUTOVER:
            self.say("gate: public traffic on the clone, primary drained")
            gates.wait_public_origin(outputs["public_url"], Instance.CLONE)
            waited = gates.wait_drained(
                lambda: ops.in_flight(outputs, Instance.PRIMARY), Instance.PRIMARY
            )
            self.say(f"gate: primary drained after {waited:.2f}s")
        elif phase is Phase.DEPLOY:
            self.say(f"gate: verify the new primary ({target_version}) at {outputs['preview_url']}")
            gates.wait_healthy(
                outputs["preview_url"],
                gates.Identity(target_version, Instance.PRIMARY, DatabaseMode.READ_WRITE),
                what=f"the primary on {target_version}",
            )
        elif phase is Phase.RETURN:
            self.say("gate: public traffic back on a healthy primary")
            gates.wait_public_origin(outputs["public_url"], Instance.PRIMARY)
            gates.wait_healthy(
                outputs["primary_url"],
                gates.Identity(target_version, Instance.PRIMARY, DatabaseMode.READ_WRITE),
                what="the primary",
            )
