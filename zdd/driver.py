"""The driver: moves a stack from phase to phase with the gates of the design between them.

Everything the driver needs to continue lives in the stack: the `zdd:*` config says where it is
going, the outputs of the last update say what was applied (`phase`, `settings_digest`).
`advance` compares the two and takes the one next step, so a driver that died anywhere goes on
with `zdd resume`. Actions (deploy, recoveries, abort) are config changes planned by
`zdd.actions`, which refuses illegal ones before anything is written.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zdd import appspec, registry
from zdd.actions import (
    APP_SET,
    RECOVERY_HINT,
    Action,
    ConfigChange,
    Refused,
    StackState,
    new_restore_point_id,
    next_step,
    plan,
    plan_app_change,
)
from zdd.config_file import StackConfigFile
from zdd.console import Say
from zdd.environment import Environment
from zdd.errors import BadInput, EngineFailed, GateFailed, RefusedTransition, StackBusy
from zdd.gatekeeper import pass_gate
from zdd.gates import components
from zdd.history import (
    gate_failure,
    history_message,
    kept_until_recorded,
    pending_gate_failure,
    pending_probe,
    read_history,
    strategy_field,
)
from zdd.phases import (
    Instance,
    InvalidStackConfig,
    Mode,
    Phase,
    PhaseSettings,
    RestorePointTaken,
    Strategy,
    check_operational_config,
    check_transition,
    settings_digest,
)
from zdd.registry import DEFAULT_TARGET, LOCAL_TARGET
from zdd.rehearsal import Rehearsal
from zdd.results import DeployResult, PhaseTiming, Status
from zdd.stack import Stack
from zdd.targets import RehearsalRequest, TargetOps, check_version, ops_for

# The command that made a stack and may remove it without asking (`zdd demo`'s own stack).
MADE_BY_KEY = "madeBy"


class Driver:
    def __init__(
        self,
        env: Environment,
        stack_name: str,
        say: Say = lambda _: None,
        stack: Stack | None = None,
    ) -> None:
        """`stack`: the stack to drive, e.g. one that times its calls (the benchmark's);
        without it the stack named `stack_name` is selected when first needed."""
        self.env = env
        self.stack_name = stack_name
        self.say = say
        self._stack = stack
        self._gate_passed: tuple[Phase, Phase] | None = None

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            self._stack = Stack.select(self.env, self.stack_name)
        return self._stack

    # -- one driver per stack ------------------------------------------------------------

    @contextmanager
    def exclusive(self, *, stack_goes: bool = False) -> Iterator[None]:
        """Hold the stack's driver lock; a second driver is refused, a dead one's lock is free.
        With `stack_goes` (a destroy), the lock's file goes too once the work succeeded; and a
        lock file made for work that failed goes too (a stack that does not exist, a typo,
        leaves nothing behind)."""
        locks = self.env.state_root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{self.stack_name}.lock"
        made_here = not path.exists()
        handle = open(path, "a+")  # noqa: SIM115 - held open
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StackBusy(
                f"another zdd driver ({holder}) is working on stack {self.stack_name!r}; "
                "wait for it, or stop it and run `zdd resume`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
            if stack_goes:
                # Still held: no second driver locks the file between its last use and its end.
                path.unlink(missing_ok=True)
        except BaseException:
            if made_here:
                path.unlink(missing_ok=True)
            raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # -- reading the stack ---------------------------------------------------------------

    def _read(
        self, *, evidence: bool = False
    ) -> tuple[dict[str, str], StackState, dict[str, Any], TargetOps]:
        """The stack as the driver sees it. With `evidence`, also what the updates really did
        to the primary (a recovery or an abort decides on that, never on the config)."""
        config = self.stack.config()
        target = config.get("target", DEFAULT_TARGET)
        try:
            settings = PhaseSettings.from_config(config)
            check_operational_config(config)
        except InvalidStackConfig as exc:
            raise InvalidStackConfig(f"stack {self.stack_name!r}: {exc}") from None
        outputs = self.stack.outputs()
        applied = Phase(outputs.get("phase", Phase.IDLE))
        awaiting = (
            config.get("awaitApproval") == "true" and applied is settings.phase is Phase.DEPLOY
        )
        taken = RestorePointTaken.from_record(outputs.get("restore_point"))
        changed = switched = False
        schema = None
        unfinished = (settings.phase is Phase.DEPLOY and applied is not Phase.DEPLOY) or (
            settings.phase is Phase.RETURN and applied in (Phase.CLONE, Phase.CUTOVER)
        )
        if evidence and unfinished:
            # An update that deploys the primary and did not finish: it may have got past the
            # restore point, after which the primary can have been changed (its migration and
            # code wait for it); out of `clone`, past its switch to the clone.
            found = self.stack.evidence()
            taken = found.restore_point(settings.restore_point)
            changed = taken is not None
            schema = found.schema if changed else None
            switched = applied is Phase.CLONE and found.switched_to_clone
        state = StackState(
            settings,
            applied,
            awaiting_approval=awaiting,
            restore_point_taken=taken,
            primary_changed=changed,
            schema_applied=schema,
            switches_in_program=registry.entry(target).switches_in_program,
            switched_to_clone=switched,
        )
        return config, state, outputs, ops_for(target)

    def status(self) -> Status:
        # With the evidence: an update out of `clone` that failed after its switch leaves
        # outputs that still say the primary has the traffic.
        config, state, outputs, ops = self._read(evidence=True)
        settings = state.settings
        cutover_at = config.get("cutoverAt")
        window = None
        if cutover_at and state.traffic_on_clone:
            compatible = settings.strategy is Strategy.COMPATIBLE
            window = 0.0 if compatible else time.time() - float(cutover_at)
        pending = outputs.get("settings_digest") != settings_digest(config)
        if state.awaiting_approval and not pending:
            label = "awaiting-approval"
        elif state.in_progress:
            label = "deployment-in-progress"
        else:
            label = "idle"
        return Status(
            stack=self.stack_name,
            target=ops.name,
            phase=str(settings.phase),
            applied_phase=outputs.get("phase"),
            state=label,
            current_version=settings.current_version,
            target_version=settings.target_version,
            traffic=(
                str(Instance.CLONE) if state.traffic_on_clone else outputs.get("traffic", "primary")
            ),
            mode=str(settings.mode),
            strategy=str(settings.strategy),
            deployment_in_progress=state.in_progress or pending,
            read_only_window_seconds=window,
            public_url=outputs.get("public_url"),
            preview_url=outputs.get("preview_url"),
            restore_point=settings.restore_point,
            database_generation=settings.database_generation,
            components={name: vars(h) for name, h in components(outputs).items()},
        )

    # -- init / destroy ------------------------------------------------------------------

    def init(
        self, target: str, version: str, app_file: Path | None = None, made_by: str | None = None
    ) -> Status:
        """Create the stack for the site its app spec describes (kept in its config) on
        `version`; a local stack given no spec runs the bundled sample site. `made_by` names
        the command that owns the stack (`zdd:madeBy`), when one does."""
        ops = ops_for(target)
        if app_file is None and target == LOCAL_TARGET:
            app_file = self.env.sample_app
        app = appspec.read_file(app_file) if app_file is not None else None
        described = {appspec.CONFIG_KEY: app.to_config()} if app is not None else {}
        check_version(version, ops, described)
        ops.check_ready()
        if Stack.exists(self.env, self.stack_name):
            raise BadInput(f"stack {self.stack_name!r} already exists; use it, or destroy it first")
        self._stack = Stack.create(self.env, self.stack_name)
        self.stack.set_config(
            {
                "target": target,
                "phase": Phase.IDLE,
                "currentVersion": version,
                **described,
                **ops.initial_config(self.env, self.stack_name),
                **({MADE_BY_KEY: made_by} if made_by else {}),
            }
        )
        self._up(Phase.IDLE, "init", None, {"action": "init", "to": version})
        return self.status()

    def destroy(self) -> None:
        self.say(f"destroying every resource of stack {self.stack_name}")
        ops = ops_for(self.stack.config().get("target", DEFAULT_TARGET))
        # A driver or CLI that died mid-update would otherwise keep the stack locked forever.
        self.clear_interrupted_update()
        self.stack.destroy()
        self.stack.remove()
        ops.forget(self.env, self.stack_name)

    # -- rehearsal -----------------------------------------------------------------------

    def rehearsal(self, version: str) -> Rehearsal:
        """What a rehearsal of `version` would do on this stack (`zdd.rehearsal`). Refused
        while a deployment is in progress: the primary's data is what that one changes."""
        config, state, outputs, ops = self._read()
        ops.check_ready()
        check_version(version, ops, config)
        if version == state.settings.current_version:
            raise BadInput(f"stack {self.stack_name!r} already runs {version}")
        if state.in_progress:
            raise RefusedTransition(
                f"rehearse refused on stack {self.stack_name!r}: a deployment is in progress "
                f"(phase {state.settings.phase}); finish it first"
            )
        if ops.rehearsal is None:
            raise BadInput(f"target {ops.name} cannot rehearse a release; use --strategy clone")
        return ops.rehearsal(
            RehearsalRequest(
                self.env,
                self.stack_name,
                config,
                outputs,
                version,
                _RehearsalUpdates(self, version),
            )
        )

    # -- actions -------------------------------------------------------------------------

    def begin(
        self,
        action: Action,
        *,
        version: str | None = None,
        mode: Mode = Mode.READ_ONLY,
        accept_data_loss: bool = False,
        wait_for_approval: bool = False,
        dry_run: bool = False,
        strategy: Strategy = Strategy.CLONE,
        decide: Callable[[], Strategy] | None = None,
    ) -> tuple[DeployResult, ConfigChange]:
        """Validate `action` and (unless `dry_run`) record it in the stack config. `decide`, if
        given, is asked once the action is known to be legal and before anything is written:
        it may raise to stop, or name the strategy to take instead of `strategy`."""
        config, state, outputs, ops = self._read(evidence=action is not Action.DEPLOY)
        ops.check_ready()
        if version is not None:
            check_version(version, ops, config)
            if action is Action.DEPLOY and version == state.settings.current_version:
                raise BadInput(f"stack {self.stack_name!r} already runs {version}")
        if mode is Mode.READ_WRITE and not accept_data_loss:
            raise BadInput(
                "read-write mode needs --accept-data-loss: writes to the clone are not kept "
                "when it is destroyed"
            )

        def planned(strategy: Strategy) -> ConfigChange:
            try:
                return plan(
                    action,
                    state,
                    version=version,
                    mode=mode,
                    accept_data_loss=accept_data_loss,
                    wait_for_approval=wait_for_approval,
                    strategy=strategy,
                )
            except Refused as exc:
                raise RefusedTransition(
                    f"{action} refused on stack {self.stack_name!r}: {exc}"
                ) from None

        change = planned(strategy)
        if action is Action.ROLLBACK_DATABASE:
            self._check_restore_point(state, ops)
            compatible = state.settings.strategy is Strategy.COMPATIBLE
            if compatible and not accept_data_loss:
                raise BadInput(
                    "rollback --with-database on the compatible path needs --accept-data-loss: "
                    "the current release kept writing to the primary database after its restore "
                    "point, and those writes are not in it"
                )
        if action is Action.DEPLOY:
            self._check_restorable(ops, outputs)
        if decide is not None:
            chosen = decide()
            if chosen is not strategy:
                change = planned(chosen)
        if action is Action.DEPLOY:
            change["deploymentId"] = uuid.uuid4().hex[:12]
        settings = state.settings
        result = DeployResult(
            outcome="running",
            stack=self.stack_name,
            action=str(action),
            from_version=settings.current_version,
            to_version=str(change.get("targetVersion") or settings.target_version or ""),
            mode=str(change.get("mode") or settings.mode),
            strategy=str(change.get("strategy") or settings.strategy),
        )
        if result.strategy == Strategy.COMPATIBLE:
            result.read_only_window_seconds = 0.0
        if not dry_run:
            taken = state.proven_restore_point
            if action is Action.ROLLBACK_DATABASE and ops.wait_restorable and taken:
                # A cloud database restores only to a moment its backups already cover.
                ops.wait_restorable(outputs, taken.id, self.say)
            # The policy pack judges the first update of the action before anything is written.
            if self.env.policy_packs():
                self.say("policy check: pulumi preview with the policy pack")
                self.preview(change)
            self.stack.set_config(change)
        return result, change

    def _check_restorable(self, ops: TargetOps, outputs: dict[str, Any]) -> None:
        """Rule 3 of docs/design.md needs a restore point the target can restore: a deployment
        does not start while the primary database has none at all."""
        problem = ops.restorable_problem(outputs) if ops.restorable_problem else None
        if problem:
            raise RefusedTransition(
                f"{Action.DEPLOY} refused on stack {self.stack_name!r}: {problem}; nothing was "
                "changed"
            )

    def begin_app_change(
        self, app_file: Path, *, dry_run: bool = False
    ) -> tuple[DeployResult, ConfigChange]:
        """Validate the app spec in `app_file` for this stack and (unless `dry_run`) store it;
        `run` then applies the idle phase, which starts the site on it. Refused during a
        deployment; a spec that is malformed or lacks the running version's release is bad
        input. Either way nothing is written."""
        config, state, _outputs, ops = self._read()
        ops.check_ready()
        new_spec = appspec.read_file(app_file)
        appspec.check_same_engine(appspec.from_config(config), new_spec)
        app = new_spec.to_config()
        try:
            change = plan_app_change(state, app)
        except Refused as exc:
            raise RefusedTransition(
                f"app set refused on stack {self.stack_name!r}: {exc}"
            ) from None
        # The idle phase runs the current version on the new spec: its release must be there.
        check_version(state.settings.current_version, ops, {**config, appspec.CONFIG_KEY: app})
        version = state.settings.current_version
        result = DeployResult(
            "running", self.stack_name, APP_SET, version, version, str(state.settings.mode)
        )
        if not dry_run:
            if self.env.policy_packs():
                self.say("policy check: pulumi preview with the policy pack")
                self.preview(change)
            self.stack.set_config(change)
        return result, change

    def _check_restore_point(self, state: StackState, ops: TargetOps) -> None:
        """A restore point that changed or went since it was taken is never restored: the
        primary would get other data than the user had."""
        taken = state.proven_restore_point
        if taken is None or ops.restore_point_problem is None:
            return
        problem = ops.restore_point_problem(self.env, self.stack_name, taken)
        if problem:
            raise RefusedTransition(
                f"{Action.ROLLBACK_DATABASE} refused on stack {self.stack_name!r}: restore point "
                f"{taken.id}: {problem}; nothing was changed. `zdd rollback --code-only` keeps "
                "the primary's database as it is"
            )

    def run(self, result: DeployResult, on_failure: Action | None = None) -> DeployResult:
        """Take every remaining step until the stack is idle again or awaits approval.

        A clone that never gets healthy aborts the deployment (the primary is untouched). A
        primary that fails its migration or verification never gets traffic: with
        `on_failure` that recovery runs by itself, otherwise the driver stops and says which
        recoveries there are.
        """
        self._read()[3].check_ready()
        self.clear_interrupted_update()
        try:
            while self.advance(result):
                pass
        except (GateFailed, EngineFailed) as exc:
            # An update whose CLI died leaves its lock and pending operations behind.
            self.clear_interrupted_update()
            _config, state, _outputs, _ops = self._read(evidence=True)
            if state.applied is Phase.CLONE and not (
                state.primary_touched or state.traffic_on_clone
            ):
                # Out of `clone`, before the traffic left the primary: the clone's check, or the
                # switch itself, failed. Once the clone holds the traffic, `zdd resume` goes on.
                self.say(f"clone check failed: {exc}; aborting, the primary was not touched")
                self.stack.set_config(plan(Action.ABORT, state))
                result.action = f"{result.action}+{Action.ABORT}"  # history: not a success
                while self.advance(result):
                    pass
                result.outcome = "aborted"
                raise type(exc)(
                    f"{exc}\ndeployment aborted; the primary was never touched"
                ) from None
            if state.traffic_on_clone and state.primary_touched:
                if on_failure is not None:
                    self.say(f"{exc}\napplying --on-failure {on_failure}")
                    recovery, _ = self.begin(on_failure)
                    result.action = f"{result.action}+{on_failure}"
                    result.to_version = recovery.to_version
                    return self.run(result)
                raise type(exc)(f"{exc}\n{RECOVERY_HINT}") from None
            raise
        _config, state, outputs, _ops = self._read()
        result.outcome = "awaiting-approval" if state.awaiting_approval else "succeeded"
        if state.awaiting_approval:
            self.say(
                f"awaiting approval: the new primary answers at {outputs.get('preview_url')} "
                "while the clone holds the traffic; `zdd complete` returns it, or recover"
            )
        return result

    def advance(self, result: DeployResult) -> bool:
        """Do the one next step; False once the stack is idle or awaits approval."""
        config, state, outputs, ops = self._read()
        settings = state.settings
        if outputs.get("settings_digest") != settings_digest(config):
            # The config asks for something the last update did not apply: the precondition
            # of that move, the update, and the check the next move needs, timed as one phase.
            started, wall = time.monotonic(), time.time()
            if not self._resumed_past_restore_point(state.applied, settings):
                self._gate_once(state.applied, settings.phase, settings, outputs, ops)
            # The idle update archives a read-write clone's database as it deletes it; the
            # address of that archive is only in the outputs from before.
            archive = outputs.get("clone_archive") if settings.phase is Phase.IDLE else None
            if settings.phase is Phase.IDLE and ops.read_only_violation is not None:
                result.read_only_violation = ops.read_only_violation(
                    self.env, self.stack_name, outputs
                )
                if result.read_only_violation:
                    self.say(result.read_only_violation)
            if settings.phase is Phase.IDLE and outputs.get("strategy") == Strategy.COMPATIBLE:
                self._report_writes_after_restore(outputs, ops, result)
            self._up(settings.phase, str(settings.phase), result, self._message(config, result))
            if archive:
                self._report_clone_writes(archive, outputs, ops, result)
            if settings.phase is not Phase.IDLE:
                config, state, outputs, ops = self._read()
                following = self._following(state)
                self._gate_once(settings.phase, following, settings, outputs, ops)
            result.phases.append(
                PhaseTiming(str(settings.phase), time.monotonic() - started, started_at=wall)
            )
            return True
        self._repair(settings.phase, config, outputs, result)
        if settings.phase is Phase.IDLE or state.awaiting_approval:
            return False
        following = self._following(state)
        self._gate_once(settings.phase, following, settings, outputs, ops)
        change = next_step(state)
        if change["phase"] in (Phase.DEPLOY, Phase.RETURN) and settings.phase in (
            Phase.CLONE,
            Phase.CUTOVER,
        ):
            change["restorePoint"] = self._take_restore_point(ops)
        self.stack.set_config(change)
        return True

    def _resumed_past_restore_point(self, applied: Phase, settings: PhaseSettings) -> bool:
        """An update out of `cutover` that was cut short after its restore point: the drain
        gate passed before that restore point was taken, and the update may have switched the
        traffic back already (`return`'s switch comes last), so the gate is not asked again."""
        if applied is not Phase.CUTOVER or self._gate_passed == (applied, settings.phase):
            return False
        point = settings.restore_point
        return point is not None and self.stack.evidence().restore_point(point) is not None

    def _take_restore_point(self, ops: TargetOps) -> str:
        """Rule 3 of docs/design.md, and the only place a restore point is named, whatever
        action led here: after the drain gate, so on the database's side of it, and on the
        target's own clock where it has one (Azure restores to a moment of its own clock). Out
        of `clone`, the update's own switch waits for the drain before its restore point
        resource records the database (a target whose restore point is a file, not a time)."""
        point = ops.take_restore_point() if ops.take_restore_point else new_restore_point_id()
        self.say(f"restore point {point} named; the update records it after the drain")
        return point

    def _repair(
        self, phase: Phase, config: dict[str, str], outputs: dict[str, Any], result: DeployResult
    ) -> None:
        """A component that died since the last update (a front door, an app) is brought back by
        applying the same phase again before the next gate, which would otherwise wait for it
        forever."""
        down = [name for name, health in components(outputs).items() if not health.answering]
        if down:
            self.say(f"{', '.join(down)} not answering: applying phase {phase} again")
            message = {**self._message(config, result), "action": "repair"}
            self._up(phase, f"{phase} (repair)", result, message)

    def _report_clone_writes(
        self, archive: str, outputs: dict[str, Any], ops: TargetOps, result: DeployResult
    ) -> None:
        """Rule 4 of docs/design.md: what a read-write clone took is reported from its archive,
        in plain words."""
        if ops.clone_writes is None:
            result.lost_writes = {"archive": archive, "rows": None}
            self.say(
                f"the read-write clone's writes are NOT in the primary; its database {archive} "
                "is kept as their archive (rows are not compared on this target)"
            )
            return
        report = ops.clone_writes(self.env, self.stack_name, outputs, Path(archive))
        result.lost_writes = report.as_json()
        self.say(report.in_words())

    def _report_writes_after_restore(
        self, outputs: dict[str, Any], ops: TargetOps, result: DeployResult
    ) -> None:
        """A rollback with database on the compatible path: the writes the current release
        took after the restore point are not in the restored primary (rule 4 of
        docs/design.md); reported before the idle update deletes the restore point."""
        lost = (
            ops.writes_after_restore(self.env, self.stack_name, outputs)
            if ops.writes_after_restore
            else None
        )
        if lost is not None:
            result.lost_writes = lost.as_json()
            self.say(lost.in_words())

    @staticmethod
    def _following(state: StackState) -> Phase:
        return Phase(str(next_step(state)["phase"]))

    def _message(self, config: dict[str, str], result: DeployResult) -> dict[str, Any]:
        return {
            "action": result.action,
            "deployment": config.get("deploymentId"),
            "from": result.from_version,
            "to": result.to_version,
            **strategy_field(config),
            **({"read_only_violation": v} if (v := result.read_only_violation) else {}),
            **pending_gate_failure(config),
            **pending_probe(config),
            **(
                {"read_only_window_seconds": round(w, 2)}
                if (w := result.read_only_window_seconds) is not None
                else {}
            ),
        }

    def _up(
        self, phase: Phase, label: str, result: DeployResult | None, message: dict[str, Any]
    ) -> None:
        self.say(f"{label}: pulumi up")
        self._gate_passed = None
        record = {**message, "phase": str(phase)}
        try:
            outcome = self.stack.up(
                policy_packs=self.env.policy_packs(),
                message=history_message(record),
            )
        finally:
            if recorded := kept_until_recorded(record):  # in the update's message: history has it
                self.stack.set_config(recorded)
            # Kept even when the update failed later on: the clone holds the traffic since then.
            to_clone = self.stack.switched_to_clone_at
            if to_clone is not None and "cutoverAt" not in self.stack.config():
                self.stack.set_config({"cutoverAt": f"{to_clone:.3f}"})
        changed = {k: v for k, v in outcome.changes.items() if k != "same"}
        self.say(f"{label}: done in {outcome.seconds:.1f}s {changed or '(no changes)'}")
        if result is not None:
            for name, op in outcome.changed:
                change: dict[str, Any] = {"phase": str(phase), "resource": name, "op": op}
                if (seconds := outcome.step_seconds.get(name)) is not None:
                    change["seconds"] = round(seconds, 2)
                result.changed.append(change)
        # The read-only window runs from the switch to the clone (the time its resource
        # recorded, or the front door's change where the switch is not a resource of its own)
        # to the front door's switch back, as the engine reported them.
        switched = outcome.front_door_changed_at
        if phase is Phase.CUTOVER and switched and "cutoverAt" not in self.stack.config():
            self.stack.set_config({"cutoverAt": f"{switched:.3f}"})
        if phase in (Phase.RETURN, Phase.WITHDRAW) and result is not None:
            cutover_at = self.stack.config().get("cutoverAt")
            if cutover_at:
                back = switched or time.time()
                result.window = (float(cutover_at), back)
                # The compatible path's clone took writes all along: no read-only window.
                compatible = self.stack.config().get("strategy") == Strategy.COMPATIBLE
                result.read_only_window_seconds = 0.0 if compatible else back - float(cutover_at)

    def clear_interrupted_update(self) -> None:
        """Make an update possible after a driver or CLI died in the middle of one: wait for a
        CLI that still runs, remove a dead one's lock, and drop its pending operations (our
        providers find and stop any process such an operation may have started)."""
        self.stack.wait_for_running_update(self.say)
        self.stack.drop_pending_operations(self.say)

    # -- gates ---------------------------------------------------------------------------

    def _gate_once(
        self,
        src: Phase,
        dst: Phase,
        settings: PhaseSettings,
        outputs: dict[str, Any],
        ops: TargetOps,
    ) -> None:
        # A gate passed by this driver holds until the next update; one found in the stack
        # (after a restart) is checked again.
        if self._gate_passed != (src, dst):
            try:
                config = self.stack.config()
                pass_gate(src, dst, settings, outputs, ops, config, self.say, stack=self.stack_name)
            except GateFailed:
                # No update records a gate: the stack config does until the next one does.
                self.stack.set_config(gate_failure(src, dst))
                raise
            self._gate_passed = (src, dst)

    # -- preview and history -------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Past deployments and recoveries, from the update messages kept with the stack."""
        return read_history(self.stack)

    def check_move(self, phase: Phase) -> None:
        """Refuse a phase the stack cannot move to from the phase it last reached."""
        _config, state, _outputs, _ops = self._read()
        check_transition(state.applied, phase, switches_in_program=state.switches_in_program)

    def preview(self, change: ConfigChange) -> dict[str, Any]:
        """`pulumi preview --diff` of the stack as `change` would configure it; changes nothing.

        The changed config goes to a temporary copy of the stack's config file, so neither the
        stack's config nor its state is written.
        """
        document = StackConfigFile(self.env.root, self.stack_name).changed(change)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(document, handle)
        try:
            # With the policy pack: a violation stops here, before any change (during an
            # update a policy only stops the resource it refuses, not those already changed).
            result, changed = self.stack.preview(
                config_file=handle.name, policy_packs=self.env.policy_packs()
            )
        finally:
            Path(handle.name).unlink()
        return {
            "stack": self.stack_name,
            "config_change": dict(change),
            "changes": {str(k): v for k, v in result.change_summary.items()},
            "would_change": [{"resource": name, "op": op} for name, op in changed],
            "diff": result.stdout,
        }


@dataclass
class _RehearsalUpdates:
    """The engine of a rehearsal that only the engine can make (`zdd:rehearse`, a stack at
    rest): each change is one update, recorded in the history as `rehearse`."""

    driver: Driver
    version: str
    # Both updates of one rehearsal are one entry of `zdd history`.
    rehearsal_id: str = field(default_factory=lambda: f"rehearsal-{uuid.uuid4().hex[:8]}")

    def apply(self, change: dict[str, str | None], label: str) -> dict[str, Any]:
        driver = self.driver
        driver.stack.set_config(change)
        current = driver.stack.config().get("currentVersion")
        record: dict[str, Any] = {
            "action": "rehearse",
            "deployment": self.rehearsal_id,
            "from": current,
            "to": self.version,
        }
        if change.get("rehearse"):
            record["rehearsing"] = True  # the entry ends with the update that removes it
        driver._up(Phase.IDLE, label, None, record)
        return driver.stack.outputs()
