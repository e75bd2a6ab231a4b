"""The Python API for pipeline scripts: one stack, its actions and its reports, as `zdd` runs them.

`open_stack` and `init_stack` give a `SmoothStack`; each action holds the stack's driver lock,
takes every step to its end and returns the `DeployResult`, or raises a `ZddError` whose
`exit_code` is the one the `zdd` command would exit with. Refusals of malformed input happen
before any engine call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zdd import appspec
from zdd.actions import Action
from zdd.appspec import DatabaseEngine
from zdd.console import Say
from zdd.driver import MADE_BY_KEY, Driver
from zdd.environment import Environment, LoggedComponent, find_project_root
from zdd.errors import BadInput
from zdd.history import probe_figures
from zdd.phases import Mode, Phase, Strategy
from zdd.probe import DEFAULT_RATE, MAX_RATE, MIN_RATE, LoadProbe, ProbeTarget
from zdd.registry import DEFAULT_TARGET, LOCAL_TARGET
from zdd.rehearsal import Decision, Rehearsal, RehearsalReport, StrategyChoice, decide
from zdd.results import DeployResult, Status
from zdd.stack import Stack, check_stack_name
from zdd.targets import LogLocation, check_version_format, ops_for

PASSPHRASE_VARIABLES = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
# What a deployment whose new primary fails may do by itself.
RECOVERIES_ON_FAILURE = (Action.ROLLBACK_CODE, Action.ROLLBACK_DATABASE)


def engine_environment(
    stack: str | None = None, target: str | None = None, *, project: Path | None = None
) -> Environment:
    """The project, with the engine's variables exported into this process (the Automation API
    inherits them). Only a `local` stack may fall back to the project's own passphrase."""
    env = Environment(project or find_project_root())
    target = target or (env.stack_target(stack) if stack else DEFAULT_TARGET)
    if target != LOCAL_TARGET and not any(name in os.environ for name in PASSPHRASE_VARIABLES):
        raise BadInput(
            f"stack {stack or ''} on target {target} needs your own secrets passphrase: "
            "set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE"
        )
    env.apply(local=target == LOCAL_TARGET)
    return env


@dataclass(frozen=True)
class ActionRequest:
    """What an action is asked to do, checked before the stack is read."""

    version: str | None = None
    mode: Mode = Mode.READ_ONLY
    accept_data_loss: bool = False
    wait_for_approval: bool = False
    # If the new primary fails: the recovery to apply by itself (a rollback), else stop.
    on_failure: Action | None = None
    # A deployment's path; `auto` and `compatible` rehearse first (`zdd.rehearsal`).
    strategy: StrategyChoice = StrategyChoice.CLONE

    def check(self, action: Action) -> None:
        """Refuse what no stack could accept (raises BadInput); the driver judges the rest."""
        if action in (Action.DEPLOY, Action.ROLLFORWARD) and self.version is None:
            raise BadInput(f"{action} needs a version (--version)")
        if self.strategy.rehearses and action is not Action.DEPLOY:
            raise BadInput(f"--strategy is for deploy, not {action}")
        if self.strategy.rehearses and self.mode is Mode.READ_WRITE:
            raise BadInput(
                "--mode read-write is for the clone path's clone; --strategy "
                f"{self.strategy} may take the compatible path, which has none"
            )
        if self.version is not None:
            check_version_format(self.version)
        recovery(self.on_failure)


@dataclass(frozen=True)
class ProbeSettings:
    """A load probe on the public endpoint for a whole action; its figures go to the result's
    `probe`, and with `chart` a timeline PNG is drawn."""

    rate: float = DEFAULT_RATE
    chart: Path | None = None

    def __post_init__(self) -> None:
        if not MIN_RATE <= self.rate <= MAX_RATE:
            raise BadInput(
                f"a probe's rate must be {MIN_RATE:g} to {MAX_RATE:g} requests/s, not {self.rate:g}"
            )


def recovery(name: Action | str | None) -> Action | None:
    """An `on_failure` given by name (`rollback-code-only`, `rollback-with-database`)."""
    if name is None:
        return None
    if str(name) not in {str(a) for a in RECOVERIES_ON_FAILURE}:
        allowed = ", ".join(str(a) for a in RECOVERIES_ON_FAILURE)
        raise BadInput(f"--on-failure must be one of: {allowed}")
    return Action(str(name))


class SmoothStack:
    """One smooth-deploy stack. Every action runs to its end (or to approval) and returns its
    report; a failure raises, and `last_result` then holds the report so far (phases, probe)."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self.last_result: DeployResult | None = None

    @property
    def name(self) -> str:
        return self._driver.stack_name

    # -- reading -------------------------------------------------------------------------

    @property
    def made_by(self) -> str | None:
        """The command that made this stack and owns it (`zdd demo`), if one did."""
        return self._driver.stack.config().get(MADE_BY_KEY)

    def status(self) -> Status:
        return self._driver.status()

    def history(self) -> list[dict[str, Any]]:
        """Past deployments and recoveries, newest first."""
        return self._driver.history()

    def log(self, component: LoggedComponent | str) -> LogLocation:
        """Where the log of `component` (`primary`, `clone`, `frontdoor`, or
        `postgresql`: the stack's database server) is: a file on this
        machine (refused while the component has never run), or where a cloud keeps it."""
        if component not in set(LoggedComponent):
            known = ", ".join(LoggedComponent)
            raise BadInput(f"no component {component!r}; logs are kept for {known}")
        config = self._driver.stack.config()
        ops = ops_for(config.get("target", DEFAULT_TARGET))
        if ops.log_of is None:
            raise BadInput(f"target {ops.name} keeps no log that zdd can show")
        location = ops.log_of(self._driver.env, self.name, config, str(component))
        if location.path is not None and not location.path.is_file():
            when = (
                "the clone runs only during a deployment (phases clone to return)"
                if component == "clone"
                else "it has not been started since the stack was made"
            )
            raise BadInput(
                f"the {component} of stack {self.name!r} has no log yet ({location.path}): {when}"
            )
        return location

    def preview(
        self, action: Action | Phase | str, request: ActionRequest | None = None
    ) -> dict[str, Any]:
        """What an action (or a move to a phase) would change; changes nothing. An action's
        name wins where a phase has the same one (deploy)."""
        request = request or ActionRequest()
        rehearsal = None
        if str(action) in {str(a) for a in Action}:
            chosen = Action(str(action))
            request.check(chosen)
            # `auto` may take either path: what it would do is the rehearsal, then the path
            # the rehearsal picks; the compatible one is shown, the clone one is the default's.
            strategy = Strategy.COMPATIBLE if request.strategy.rehearses else Strategy.CLONE
            _, change = self._begin(chosen, request, dry_run=True, strategy=strategy)
            if request.strategy.rehearses:
                assert request.version is not None
                rehearsal = self._driver.rehearsal(request.version).as_json()
        elif str(action) in {str(p) for p in Phase}:
            self._driver.check_move(Phase(str(action)))
            change = {"phase": str(action)}
        else:
            raise BadInput(f"unknown action or phase {action!r}")
        shown = self._driver.preview(change)
        return {**shown, "rehearsal": rehearsal} if rehearsal else shown

    # -- actions -------------------------------------------------------------------------

    def deploy(
        self,
        version: str,
        *,
        mode: Mode = Mode.READ_ONLY,
        accept_data_loss: bool = False,
        wait_for_approval: bool = False,
        on_failure: Action | str | None = None,
        probe: ProbeSettings | None = None,
        strategy: StrategyChoice | str = StrategyChoice.CLONE,
    ) -> DeployResult:
        """Ship `version` with no downtime: clone, cutover, deploy, verify, return, clean up.
        `strategy` `auto` rehearses first and skips the read-only window when the rehearsal
        proves the running release compatible; `compatible` refuses when it does not."""
        request = ActionRequest(
            version,
            mode,
            accept_data_loss,
            wait_for_approval,
            recovery(on_failure),
            StrategyChoice.parse(strategy),
        )
        return self.act(Action.DEPLOY, request, probe=probe)

    def rehearse(self, version: str) -> RehearsalReport:
        """Rehearse `version` on a copy of the primary's data (`zdd.rehearsal`): nothing public
        changes and nothing is left behind."""
        check_version_format(version)
        with self._driver.exclusive():
            return self._driver.rehearsal(version).run(self._driver.say)

    def rehearsal_plan(self, version: str) -> Rehearsal:
        """What `rehearse(version)` would do; does nothing."""
        check_version_format(version)
        return self._driver.rehearsal(version)

    def rollforward(
        self, version: str, *, wait_for_approval: bool = False, probe: ProbeSettings | None = None
    ) -> DeployResult:
        """While the clone holds the traffic: deploy `version` to the primary instead."""
        request = ActionRequest(version, wait_for_approval=wait_for_approval)
        return self.act(Action.ROLLFORWARD, request, probe=probe)

    def rollback(
        self,
        *,
        with_database: bool,
        wait_for_approval: bool = False,
        probe: ProbeSettings | None = None,
        accept_data_loss: bool = False,
    ) -> DeployResult:
        """While the clone holds the traffic: the version before the deployment, and with
        `with_database` the database from the proven restore point (on the compatible path
        that loses the writes made since, so it needs `accept_data_loss`)."""
        action = Action.ROLLBACK_DATABASE if with_database else Action.ROLLBACK_CODE
        request = ActionRequest(
            wait_for_approval=wait_for_approval, accept_data_loss=accept_data_loss
        )
        return self.act(action, request, probe=probe)

    def abort(self) -> DeployResult:
        """Before the primary was changed: traffic back to it, clone destroyed."""
        return self.act(Action.ABORT, ActionRequest())

    def complete(self, *, probe: ProbeSettings | None = None) -> DeployResult:
        """Approve a deployment that awaits approval: return the traffic and clean up."""
        return self.act(Action.COMPLETE, ActionRequest(), probe=probe)

    def act(
        self,
        action: Action,
        request: ActionRequest,
        *,
        probe: ProbeSettings | None = None,
        confirm: Callable[[], None] = lambda: None,
    ) -> DeployResult:
        """Carry out `action` to its end. `confirm` is called once the action is known to be
        legal and before anything is written (it may raise to stop)."""
        request.check(action)
        self.last_result = None
        with self._driver.exclusive():
            decided: list[tuple[Decision, RehearsalReport | None]] = []

            def choose() -> Strategy:
                confirm()
                report = None
                if request.strategy.rehearses:
                    assert request.version is not None
                    report = self._driver.rehearsal(request.version).run(self._driver.say)
                decision = decide(request.strategy, report)
                self._driver.say(f"strategy {decision.strategy}: {decision.reason}")
                decided.append((decision, report))
                return decision.strategy

            result, _ = self._begin(action, request, decide=choose)
            decision, report = decided[0]
            result.strategy_reason = decision.reason
            result.rehearsal = report.as_json() if report else None
            load = self._load_probe(probe)
            return self._drive(result, probe, load, request.on_failure)

    def set_app(self, app_file: Path) -> DeployResult:
        """Validate the app spec in `app_file` and store it as the stack's (`zdd:app`), then
        apply the idle phase so the site runs on it; returns that update's report. Legal while
        no deployment is under way, also after a failed `init` (RefusedTransition otherwise);
        a bad spec, or one without the running version's release, is refused (BadInput) with
        nothing changed. The history records it as `app-set`."""
        self.last_result = None
        with self._driver.exclusive():
            result, _ = self._driver.begin_app_change(app_file)
            return self._drive(result, None, None, None)

    def preview_app(self, app_file: Path) -> dict[str, Any]:
        """What storing the app spec in `app_file` would change; changes nothing."""
        _, change = self._driver.begin_app_change(app_file, dry_run=True)
        return self._driver.preview(change)

    def resume(self, *, probe: ProbeSettings | None = None) -> DeployResult:
        """Continue an interrupted deployment or recovery from the stack alone; a component
        that died (front door, primary, clone) is brought back first, in any phase."""
        self.last_result = None
        with self._driver.exclusive():
            before = self._driver.status()
            all_up = all(c["answering"] for c in before.components.values())
            if not before.deployment_in_progress and all_up:
                raise BadInput(f"no deployment in progress on stack {self.name!r}")
            result = DeployResult(
                outcome="running",
                stack=self.name,
                action="resume",
                from_version=before.current_version,
                to_version=before.target_version or before.current_version,
                mode=before.mode,
            )
            load = self._load_probe(probe, before.public_url)
            return self._drive(result, probe, load, None)

    def destroy(self) -> None:
        """Remove every resource of the stack and the stack itself."""
        with self._driver.exclusive(stack_goes=True):
            self._driver.destroy()

    # -- steps ---------------------------------------------------------------------------

    def _begin(
        self,
        action: Action,
        request: ActionRequest,
        *,
        dry_run: bool = False,
        strategy: Strategy = Strategy.CLONE,
        decide: Callable[[], Strategy] | None = None,
    ) -> tuple[DeployResult, dict[str, str | None]]:
        return self._driver.begin(
            action,
            version=request.version,
            mode=request.mode,
            accept_data_loss=request.accept_data_loss,
            wait_for_approval=request.wait_for_approval,
            dry_run=dry_run,
            strategy=strategy,
            decide=decide,
        )

    def _load_probe(
        self, probe: ProbeSettings | None, public_url: str | None = None
    ) -> LoadProbe | None:
        """A load probe asking of the site what its app spec's `probe` section says."""
        if probe is None:
            return None
        target = ProbeTarget.of(appspec.from_config(self._driver.stack.config()))
        url = public_url or self._driver.status().public_url
        return LoadProbe(url or "", target, rate=probe.rate)

    def _drive(
        self,
        result: DeployResult,
        probe: ProbeSettings | None,
        load: LoadProbe | None,
        on_failure: Action | None,
    ) -> DeployResult:
        """Take the steps to the end under the probe; a failure still reports the probe."""
        self.last_result = result
        # The deployment the probe watches; its last update clears the id from the config.
        deployment = self._driver.stack.config().get("deploymentId")
        if load is not None:
            self._driver.say(f"probe: {load.rate:.0f} requests/s on {load.public_url}")
            load.start()
        try:
            self._driver.run(result, on_failure=on_failure)
        finally:
            if load is not None:
                self._finish_probe(load, result, probe.chart if probe else None)
                # For `zdd history`: the next update's message records them.
                figures = probe_figures(deployment, result.action, result.probe or {})
                self._driver.stack.set_config(figures)
        return result

    def _finish_probe(self, load: LoadProbe, result: DeployResult, chart: Path | None) -> None:
        load.stop()
        result.probe = load.report().as_json()
        if chart is None:
            return
        from zdd.chart import TimelineRun, write_timeline  # matplotlib: only when drawn

        spans = [(p.name, p.started_at, p.started_at + p.seconds) for p in result.phases]
        run = TimelineRun(
            title=f"{result.action} {result.from_version} -> {result.to_version}",
            samples=load.samples,
            started_at=load.started_at,
            phases=spans,
            window=result.window,
        )
        write_timeline(str(chart), [run])
        self._driver.say(f"timeline written to {chart}")


def open_stack(
    name: str, *, project: Path | None = None, on_progress: Say | None = None
) -> SmoothStack:
    """An existing stack of the project (found from the working folder unless `project`);
    `on_progress` is told each step in words."""
    check_stack_name(name)
    env = engine_environment(name, project=project)
    return SmoothStack(Driver(env, name, on_progress or _quiet))


def init_stack(
    name: str,
    version: str,
    *,
    target: str = DEFAULT_TARGET,
    app: Path | None = None,
    project: Path | None = None,
    on_progress: Say | None = None,
    database: DatabaseEngine | None = None,
    made_by: str | None = None,
) -> SmoothStack:
    """Create a stack for the site `app` describes (locally the sample site by default, on
    `database`) and bring it to `idle` on `version`; `made_by` marks a stack a command owns."""
    check_stack_name(name)
    check_version_format(version)
    env = engine_environment(name, target, project=project)
    app = sample_or_spec(env, app, database)
    driver = Driver(env, name, on_progress or _quiet)
    driver.init(target, version, app, made_by)
    return SmoothStack(driver)


def stack_exists(name: str, *, project: Path | None = None) -> bool:
    check_stack_name(name)
    return Stack.exists(engine_environment(name, project=project), name)


def sample_or_spec(
    env: Environment, app: Path | None, database: DatabaseEngine | None
) -> Path | None:
    """`--database` picks the sample site's spec on that engine; with `--app`, the spec says
    which engine it runs on, and a `--database` that says otherwise is refused."""
    if database is None:
        return app
    if app is None:
        return env.sample_app_on(str(database))
    engine = appspec.read_file(app).engine
    if engine is not database:
        raise BadInput(
            f"--database {database} but the app spec {app} runs on {engine} "
            "(its `database.engine`): drop --database, or change the spec"
        )
    return app


def _quiet(_message: str) -> None:
    """A pipeline that passes no `on_progress` reads the results, not the steps."""
