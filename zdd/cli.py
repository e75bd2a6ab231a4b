"""`zdd`: zero-downtime deployments of a database-backed site, one Pulumi stack per site.

Human progress goes to standard error; `--json` prints one JSON document on standard output.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from zdd import logs as zdd_logs
from zdd.actions import Action
from zdd.api import (
    ActionRequest,
    ProbeSettings,
    SmoothStack,
    init_stack,
    open_stack,
    recovery,
    stack_exists,
)
from zdd.appspec import DatabaseEngine
from zdd.console import stderr_console
from zdd.environment import SAMPLE_FROM_VERSION, SAMPLE_TO_VERSION, LoggedComponent
from zdd.errors import BadInput, ZddError, exit_codes_text
from zdd.phases import Mode
from zdd.probe import DEFAULT_RATE as DEFAULT_PROBE_RATE
from zdd.probe import MAX_RATE, MIN_RATE
from zdd.registry import DEFAULT_TARGET, TARGETS
from zdd.rehearsal import StrategyChoice
from zdd.results import DeployResult

app = typer.Typer(
    help=f"{(__doc__ or '').strip()}\n\n{exit_codes_text()}.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = stderr_console()
# What `zdd demo` marks its own stack with, so that a later demo may remove it.
DEMO = "demo"
T = TypeVar("T")
TARGET_HELP = f"Where the site runs: {', '.join(TARGETS)} ({DEFAULT_TARGET} is this machine)."

# `zdd app ...`: the site's app spec, kept in the stack.
app_spec_commands = typer.Typer(no_args_is_help=True)
app.add_typer(app_spec_commands, name="app")

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="Stack name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DatabaseOpt = Annotated[
    DatabaseEngine | None,
    typer.Option(
        help="The sample site's database engine (without --app); with --app, the spec's own.",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
PreviewOpt = Annotated[
    bool, typer.Option("--preview", help="Only show what the action would change (pulumi preview).")
]
ProbeOpt = Annotated[
    bool, typer.Option("--probe", help="Run a load probe on the public endpoint throughout.")
]
RateOpt = Annotated[
    float,
    typer.Option(
        envvar="ZDD_PROBE_RATE",
        min=MIN_RATE,
        max=MAX_RATE,
        help="Probe requests per second (a CI machine shared with others may want fewer).",
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait-for-approval",
        help="Stop once the new primary is verified (traffic still on the clone); "
        "`zdd complete` goes on.",
    ),
]
ChartOpt = Annotated[
    str | None, typer.Option("--chart", help="With --probe: write a timeline PNG to this file.")
]


def _open(stack: str, as_json: bool) -> SmoothStack:
    return _run(as_json, lambda: open_stack(stack, on_progress=_say))


def _say(message: str) -> None:
    # What is said may hold engine output with brackets: text, never Rich markup.
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(message)}")


def _fail(exc: ZddError, as_json: bool, partial: DeployResult | None = None) -> NoReturn:
    if as_json:
        document: dict[str, Any] = partial.as_json() if partial else {}
        document.update(outcome=document.get("outcome", "failed"), error=str(exc))
        document["kind"] = type(exc).__name__
        if document["outcome"] == "running":
            document["outcome"] = "failed"
        print(json.dumps(document, indent=2))
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
    raise typer.Exit(exc.exit_code)


def _run(as_json: bool, action: Callable[[], T]) -> T:
    try:
        return action()
    except ZddError as exc:
        _fail(exc, as_json)


def _emit(document: dict[str, Any], as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        human()


def _confirm(yes: bool, as_json: bool, question: str) -> None:
    if not yes and not as_json and sys.stdin.isatty():
        typer.confirm(question, abort=True)


@app.command()
def init(
    stack: StackOpt,
    version: Annotated[str, typer.Option(help="Version the site starts on, e.g. v1.")],
    target: Annotated[str, typer.Option(help=TARGET_HELP)] = DEFAULT_TARGET,
    app_file: Annotated[
        Path | None,
        typer.Option(
            "--app",
            help="The site's app spec (YAML); default on the local target: the sample site's, "
            "apps/sample/app.yaml.",
        ),
    ] = None,
    database: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a stack for the site its app spec describes and bring it to `idle` on VERSION."""
    made = _run(
        as_json,
        lambda: init_stack(
            stack, version, target=target, app=app_file, on_progress=_say, database=database
        ),
    )
    status = _run(as_json, made.status)
    _emit(status.as_json(), as_json, lambda: _print_status(status.as_json()))


@app.command()
def status(stack: StackOpt, as_json: JsonOpt = False) -> None:
    """Show the phase, the versions, where public traffic goes and the read-only window so far."""
    current = _run(as_json, _open(stack, as_json).status)
    _emit(current.as_json(), as_json, lambda: _print_status(current.as_json()))


def _act(
    stack: str,
    action: Action,
    *,
    as_json: bool,
    preview: bool = False,
    yes: bool = True,
    version: str | None = None,
    mode: Mode = Mode.READ_ONLY,
    accept_data_loss: bool = False,
    wait_for_approval: bool = False,
    on_failure: str | None = None,
    probe: bool = False,
    probe_rate: float = DEFAULT_PROBE_RATE,
    chart: str | None = None,
    strategy: str = StrategyChoice.CLONE,
) -> None:
    """Validate an action, then preview it or carry it out to its end."""
    choice = _run(as_json, lambda: StrategyChoice.parse(strategy))
    recovery_on_failure = _run(as_json, lambda: recovery(on_failure))
    request = ActionRequest(
        version, mode, accept_data_loss, wait_for_approval, recovery_on_failure, choice
    )
    smooth = _open(stack, as_json)
    if preview:
        shown = _run(as_json, lambda: smooth.preview(action, request))
        _emit(shown, as_json, lambda: _print_preview(shown))
        return
    load = ProbeSettings(probe_rate, Path(chart) if chart else None) if probe else None

    def confirm() -> None:
        _confirm(yes, as_json, f"{action} on stack {stack}?")

    _report(smooth, as_json, lambda: smooth.act(action, request, probe=load, confirm=confirm))


def _report(smooth: SmoothStack, as_json: bool, drive: Callable[[], DeployResult]) -> None:
    """Carry out an action and print its result; a failure still prints what was done."""
    try:
        result = drive()
    except ZddError as exc:
        _fail(exc, as_json, smooth.last_result)
    _emit(result.as_json(), as_json, lambda: _print_result(result.as_json()))


@app.command()
def deploy(
    stack: StackOpt,
    version: Annotated[str, typer.Option(help="Version to deploy to the primary.")],
    mode: Annotated[
        Mode, typer.Option(help="Database mode of the clone while it holds the traffic.")
    ] = Mode.READ_ONLY,
    accept_data_loss: Annotated[
        bool,
        typer.Option(
            "--accept-data-loss",
            help="Needed for read-write mode: writes to the clone are not kept.",
        ),
    ] = False,
    on_failure: Annotated[
        str | None,
        typer.Option(
            help="If the new primary fails: rollback-code-only or rollback-with-database.",
        ),
    ] = None,
    wait_for_approval: WaitOpt = False,
    yes: YesOpt = False,
    preview: PreviewOpt = False,
    probe: ProbeOpt = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    chart: ChartOpt = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="clone (a read-only copy serves meanwhile), auto (rehearse, then the compatible "
            "path if the running release passed on the migrated copy, else clone) or compatible "
            "(refused unless the rehearsal passes).",
        ),
    ] = StrategyChoice.CLONE,
    as_json: JsonOpt = False,
) -> None:
    """Ship VERSION with no downtime: clone, cutover, deploy + migrate, verify, return, clean up."""
    _act(
        stack, Action.DEPLOY, as_json=as_json, preview=preview, yes=yes, version=version,
        mode=mode, accept_data_loss=accept_data_loss, wait_for_approval=wait_for_approval,
        on_failure=on_failure, probe=probe, probe_rate=probe_rate, chart=chart, strategy=strategy,
    )  # fmt: skip


@app.command()
def rehearse(
    stack: StackOpt,
    version: Annotated[str, typer.Option(help="The release whose migration is rehearsed.")],
    preview: Annotated[
        bool, typer.Option("--preview", help="Only say what the rehearsal would do.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Does the running release work on VERSION's schema? Migrates a copy of the primary's data
    and tries the running release on it; nothing public changes, nothing is left behind. The
    verdict is `compatible` (exit 0 either way)."""
    smooth = _open(stack, as_json)
    if preview:
        plan = _run(as_json, lambda: smooth.rehearsal_plan(version))
        _emit(plan.as_json(), as_json, lambda: err.print("\n".join(plan.steps())))
        return
    report = _run(as_json, lambda: smooth.rehearse(version))
    _emit(report.as_json(), as_json, lambda: _print_rehearsal(report.as_json()))


@app.command()
def rollforward(
    stack: StackOpt,
    version: Annotated[str, typer.Option(help="Another version to deploy to the primary.")],
    wait_for_approval: WaitOpt = False,
    preview: PreviewOpt = False,
    probe: ProbeOpt = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    as_json: JsonOpt = False,
) -> None:
    """While the clone holds the traffic: deploy VERSION to the primary instead, then go on."""
    _act(
        stack, Action.ROLLFORWARD, as_json=as_json, preview=preview, version=version,
        wait_for_approval=wait_for_approval, probe=probe, probe_rate=probe_rate,
    )  # fmt: skip


@app.command()
def rollback(
    stack: StackOpt,
    code_only: Annotated[
        bool,
        typer.Option("--code-only", help="The version before the deployment; keep the database."),
    ] = False,
    with_database: Annotated[
        bool,
        typer.Option(
            "--with-database",
            help="The version before the deployment, and the database from the restore point.",
        ),
    ] = False,
    wait_for_approval: WaitOpt = False,
    accept_data_loss: Annotated[
        bool,
        typer.Option(
            "--accept-data-loss",
            help="Needed with --with-database on the compatible path: the writes made since "
            "the restore point are lost.",
        ),
    ] = False,
    preview: PreviewOpt = False,
    probe: ProbeOpt = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    as_json: JsonOpt = False,
) -> None:
    """While the clone holds the traffic: the primary back on the version before the deployment."""
    if code_only == with_database:
        _fail(BadInput("say which rollback: --code-only or --with-database"), as_json)
    action = Action.ROLLBACK_CODE if code_only else Action.ROLLBACK_DATABASE
    _act(
        stack, action, as_json=as_json, preview=preview, wait_for_approval=wait_for_approval,
        probe=probe, probe_rate=probe_rate, accept_data_loss=accept_data_loss,
    )  # fmt: skip


@app.command()
def abort(stack: StackOpt, preview: PreviewOpt = False, as_json: JsonOpt = False) -> None:
    """Before anything touched the primary: traffic back to it, clone destroyed."""
    _act(stack, Action.ABORT, as_json=as_json, preview=preview)


@app.command()
def complete(
    stack: StackOpt,
    probe: ProbeOpt = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    as_json: JsonOpt = False,
) -> None:
    """Approve a deployment that awaits approval: return the traffic and clean up."""
    _act(stack, Action.COMPLETE, as_json=as_json, probe=probe, probe_rate=probe_rate)


@app.command()
def resume(
    stack: StackOpt,
    probe: ProbeOpt = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    as_json: JsonOpt = False,
) -> None:
    """Continue an interrupted deployment or recovery from the stack's config and outputs; a
    component that died (front door, primary, clone) is brought back first, in any phase."""
    smooth = _open(stack, as_json)
    _report(
        smooth, as_json, lambda: smooth.resume(probe=ProbeSettings(probe_rate) if probe else None)
    )


@app.command()
def preview(
    stack: StackOpt,
    action: Annotated[
        str,
        typer.Argument(
            help="deploy, rollforward, rollback-code-only, rollback-with-database, abort, "
            "or a phase (idle, clone, cutover, deploy, return)."
        ),
    ],
    version: Annotated[str | None, typer.Option(help="For deploy and rollforward.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what an action or a phase would create, update, replace and delete; change nothing."""
    smooth = _open(stack, as_json)
    shown = _run(as_json, lambda: smooth.preview(action, ActionRequest(version=version)))
    _emit(shown, as_json, lambda: _print_preview(shown))


@app.command()
def history(stack: StackOpt, as_json: JsonOpt = False) -> None:
    """Every deployment, recovery and app spec change since `init`, with its real outcome.

    Newest first: the version each set out for, its outcome (succeeded; aborted at gate X;
    failed at phase P or gate X; rolled back to V) and its phase timings (`!` marks an update
    that did not succeed). Read from the stack's own update history, all of it."""
    entries = _run(as_json, _open(stack, as_json).history)
    _emit({"stack": stack, "deployments": entries}, as_json, lambda: _print_history(entries))


@app.command()
def logs(
    stack: StackOpt,
    component: Annotated[
        LoggedComponent,
        typer.Argument(
            help="Whose log: primary, clone, frontdoor, postgresql (the stack's database server) "
            "or postgresql-clone (the clone's own copy of it)."
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what is added, until Ctrl-C.")
    ] = False,
    lines: Annotated[
        int | None, typer.Option("--lines", "-n", min=0, help="Only the last N lines.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the log of the primary, the clone, the front door or the database server.

    A local stack keeps them in `.zdd/stacks/<stack>/`; `--follow` prints what is added until
    interrupted (Ctrl-C). A gate that fails names this command. For an Azure stack it says
    where the log is (the App Service log stream) and exits 2."""
    if follow and as_json:
        _fail(BadInput("--follow streams text; it cannot be one JSON document"), as_json)
    smooth = _open(stack, as_json)
    location = _run(as_json, lambda: smooth.log(component))
    if location.path is None:
        _fail(BadInput(f"{location.where}; `zdd logs` shows only logs on this machine"), as_json)
    text, offset = zdd_logs.read(location.path, lines)
    if as_json:
        document = {"stack": stack, "component": component, "path": str(location.path)}
        print(json.dumps({**document, "text": text}, indent=2))
        return
    _write(text)
    if follow:
        err.print(f"following {location.path} (Ctrl-C stops)", markup=False)
        with contextlib.suppress(KeyboardInterrupt):
            zdd_logs.follow(location.path, _write, offset)


def _write(text: str) -> None:
    """A log goes to stdout as it is: no markup, no wrapping, at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


@app_spec_commands.callback()
def app_spec() -> None:
    """The site's app spec: `zdd app set` replaces the one the stack keeps (`zdd:app`)."""


@app_spec_commands.command("set")
def app_set(
    stack: StackOpt,
    file: Annotated[Path, typer.Argument(help="The new app spec (YAML), as for `init --app`.")],
    preview: PreviewOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate FILE, store it as the stack's app spec and restart the site on it.

    After storing it, the idle phase is applied (as `zdd resume` on an idle stack), so the
    site starts on the new spec, and that update is reported. Legal while no deployment is
    under way, also after a failed `init` (a typo that `init` found, such as a `start` that
    exits, is fixed this way); refused during a deployment (exit 3). A malformed spec, or one
    without the release of the running version, changes nothing (exit 2). `zdd history`
    lists it as `app-set`."""
    smooth = _open(stack, as_json)
    if preview:
        shown = _run(as_json, lambda: smooth.preview_app(file))
        _emit(shown, as_json, lambda: _print_preview(shown))
        return
    _report(smooth, as_json, lambda: smooth.set_app(file))


@app.command()
def destroy(
    stack: StackOpt,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm: this deletes the site.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove every resource of the stack (processes, databases, front door) and the stack."""
    if not yes:
        _fail(BadInput("destroy deletes the site and its databases; confirm with --yes"), as_json)
    _run(as_json, _open(stack, as_json).destroy)
    _emit(
        {"outcome": "destroyed", "stack": stack}, as_json, lambda: _say(f"stack {stack} destroyed")
    )


@app.command()
def demo(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name.")] = "demo",
    keep: Annotated[bool, typer.Option(help="Leave the site running to browse it.")] = False,
    probe_rate: RateOpt = DEFAULT_PROBE_RATE,
    chart: ChartOpt = None,
    database: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A full smooth deployment on this machine: a fresh stack on v1, then v2 under load."""
    if _run(as_json, lambda: stack_exists(stack)):
        previous = _open(stack, as_json)
        if _run(as_json, lambda: previous.made_by) != DEMO:
            question = f"stack {stack} exists and was not made by `zdd demo`: destroy it?"
            if as_json or not sys.stdin.isatty():
                _fail(
                    BadInput(
                        f"stack {stack!r} exists and was not made by `zdd demo`; run the demo "
                        "with another --stack, or `zdd destroy` that stack yourself first"
                    ),
                    as_json,
                )
            typer.confirm(question, abort=True)
        _say(f"removing the previous {stack} stack")
        _run(as_json, previous.destroy)
    smooth: SmoothStack | None = None
    try:
        smooth = _run(
            as_json,
            lambda: init_stack(
                stack, SAMPLE_FROM_VERSION, on_progress=_say, database=database, made_by=DEMO
            ),
        )
        _act(stack, Action.DEPLOY, as_json=as_json, version=SAMPLE_TO_VERSION, probe=True,
             probe_rate=probe_rate, chart=chart)  # fmt: skip
    finally:
        if smooth is None and _run(as_json, lambda: stack_exists(stack)):
            smooth = _open(stack, as_json)  # an init that failed half way
        if smooth is not None and keep:
            _say(
                f"the site stays up at {smooth.status().public_url}; `zdd destroy -s {stack} --yes`"
            )
        elif smooth is not None:
            _run(as_json, smooth.destroy)


def _print_status(status: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in status.items():
        if value is not None:
            table.add_row(key.replace("_", " "), str(value))
    err.print(table)


def _print_result(report: dict[str, Any]) -> None:
    err.print(
        f"[bold]{report['outcome']}[/bold] ({report['action']}): {report['from_version']} -> "
        f"{report['to_version']} on {report['stack']} ({report['mode']})"
    )
    table = Table("phase", "seconds")
    for phase in report["phases"]:
        table.add_row(phase["name"], f"{phase['seconds']:.2f}")
    err.print(table)
    if report.get("read_only_window_seconds") is not None:
        err.print(f"read-only window: {report['read_only_window_seconds']:.2f}s")
    if work := report.get("primary_work"):
        parts = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in work["resources"].items())
        err.print(
            f"  the primary's own work in it: {work['seconds']:.2f}s ({parts}); the window is "
            f"{work['window_over_work']:.1f}x that (the rest: engine start-ups and the driver)"
        )
    if report.get("probe"):
        err.print(
            "probe: {requests} requests, {failed} failed, {writes_acknowledged} writes "
            "acknowledged ({writes_held} held at the front door, the longest "
            "{longest_hold_seconds:.2f}s), {writes_refused} refused, {writes_lost} lost, "
            "{writes_hidden} hidden".format(**report["probe"])
        )


def _print_rehearsal(report: dict[str, Any]) -> None:
    verdict = "compatible" if report["compatible"] else "not compatible"
    copy, migration = report["copy"], "ok" if report["migration_ok"] else "FAILED"
    err.print(f"[bold]{verdict}[/bold]: {escape(report['verdict'])}")
    err.print(
        f"copy: {copy['rows']} rows, {copy['bytes']} bytes in {copy['seconds']:.2f}s; "
        f"migration {migration} in {report['migration_seconds']:.2f}s; "
        f"{report['seconds']:.2f}s in all"
    )
    failure = report["failure"]
    if failure and failure["log"]:
        err.print("the site's last log lines:\n" + "\n".join(failure["log"]), markup=False)


def _print_preview(shown: dict[str, Any]) -> None:
    err.print(shown["diff"], markup=False)
    err.print(f"changes: {shown['changes']} (nothing was changed)")


def _print_history(entries: list[dict[str, Any]]) -> None:
    table = Table("started", "actions", "versions", "outcome", "phases", "visitors")
    for entry in entries:
        phases = ", ".join(
            f"{p['name']} {p['seconds'] or 0:.1f}s" + ("" if p["result"] == "succeeded" else "!")
            for p in entry["phases"]
        )
        # The version it set out for, whatever it ended on (the outcome says that).
        tried = " -> ".join(entry["attempted_versions"]) or entry["to_version"]
        table.add_row(
            entry["started"] or "",
            "+".join(entry["actions"]),
            f"{entry['from_version']} -> {tried}" if entry["from_version"] else tried,
            entry["outcome_detail"],
            phases,
            _visitors(entry),
        )
    err.print(table)


def _visitors(entry: dict[str, Any]) -> str:
    """What the deployment's read-only window and load probes (if any ran) saw."""
    seen = []
    if (window := entry.get("read_only_window_seconds")) is not None:
        seen.append(f"read-only {window:.1f}s")
    if probe := entry.get("probe"):
        seen.append(
            f"{probe['requests']} requests, {probe['failed']} failed, {probe['writes_held']} "
            f"writes held (longest {probe['longest_hold_seconds']:.1f}s), "
            f"{probe['writes_refused']} refused, {probe['writes_lost']} lost"
        )
    return "; ".join(seen)


if __name__ == "__main__":
    app()
