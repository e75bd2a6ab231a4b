"""`zdd`: zero-downtime deployments of a database-backed site, one Pulumi stack per site.

Human progress goes to standard error; `--json` prints one JSON document on standard output.
Exit codes: 0 goal reached, 1 unexpected error, 2 bad input, 3 refused transition,
4 failed gate, 5 engine failure, 6 stack busy.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from zdd.driver import DeployResult, Driver
from zdd.environment import Environment, find_project_root
from zdd.errors import BadInput, ZddError
from zdd.phases import Mode
from zdd.probe import LoadProbe

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
T = TypeVar("T")

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="Stack name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _env() -> Environment:
    env = Environment(find_project_root())
    env.apply()
    return env


def _say(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def _fail(exc: ZddError, as_json: bool) -> NoReturn:
    if as_json:
        print(json.dumps({"outcome": "failed", "error": str(exc), "kind": type(exc).__name__}))
    err.print(f"[bold red]error:[/bold red] {exc}")
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


@app.command()
def init(
    stack: StackOpt,
    version: Annotated[str, typer.Option(help="Version the site starts on, e.g. v1.")],
    target: Annotated[str, typer.Option(help="local (this machine) or azure.")] = "local",
    as_json: JsonOpt = False,
) -> None:
    """Create a stack and bring it to `idle`: the site running VERSION with sample content."""
    driver = Driver(_env(), stack, _say)
    status = _run(as_json, lambda: driver.init(target, version))
    _emit(status.as_json(), as_json, lambda: _print_status(status.as_json()))


@app.command()
def status(stack: StackOpt, as_json: JsonOpt = False) -> None:
    """Show the phase, the versions, where public traffic goes and the read-only window so far."""
    driver = Driver(_env(), stack, _say)
    current = _run(as_json, driver.status)
    _emit(current.as_json(), as_json, lambda: _print_status(current.as_json()))


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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    probe: Annotated[
        bool, typer.Option("--probe", help="Run a load probe on the public endpoint throughout.")
    ] = False,
    probe_rate: Annotated[float, typer.Option(help="Probe requests per second.")] = 400.0,
    as_json: JsonOpt = False,
) -> None:
    """Ship VERSION with no downtime: clone, cutover, deploy + migrate, verify, return, clean up."""
    driver = Driver(_env(), stack, _say)
    if not yes and not as_json and sys.stdin.isatty():
        typer.confirm(f"Deploy {version} to stack {stack} ({mode})?", abort=True)
    result = _deploy(driver, version, mode, accept_data_loss, probe, probe_rate, as_json)
    _emit(result.as_json(), as_json, lambda: _print_deploy(result.as_json()))


def _deploy(
    driver: Driver,
    version: str,
    mode: Mode,
    accept_data_loss: bool,
    with_probe: bool,
    probe_rate: float,
    as_json: bool,
) -> DeployResult:
    before = _run(as_json, driver.status)
    result = DeployResult(
        outcome="running",
        stack=driver.stack_name,
        from_version=before.current_version,
        to_version=version,
        mode=str(mode),
    )
    # Validates everything before the first change; a refusal leaves the stack as it was.
    _run(as_json, lambda: driver.start_deployment(version, mode, accept_data_loss))
    load = LoadProbe(before.public_url or "", rate=probe_rate) if with_probe else None
    if load:
        _say(f"probe: {probe_rate:.0f} requests/s on {before.public_url}")
        load.start()
    try:
        _run(as_json, lambda: driver.run_to_completion(result))
    finally:
        if load:
            load.stop()
            report = load.report()
            result.probe = report.as_json()
    return result


@app.command()
def resume(stack: StackOpt, as_json: JsonOpt = False) -> None:
    """Continue an interrupted deployment from the stack's config and outputs."""
    driver = Driver(_env(), stack, _say)
    before = _run(as_json, driver.status)
    if not before.deployment_in_progress:
        _fail(BadInput(f"no deployment in progress on stack {stack!r}"), as_json)
    result = DeployResult(
        outcome="running",
        stack=stack,
        from_version=before.current_version,
        to_version=before.target_version or before.current_version,
        mode=before.mode,
    )
    _run(as_json, lambda: driver.run_to_completion(result))
    _emit(result.as_json(), as_json, lambda: _print_deploy(result.as_json()))


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
    driver = Driver(_env(), stack, _say)
    _run(as_json, driver.destroy)
    _emit(
        {"outcome": "destroyed", "stack": stack}, as_json, lambda: _say(f"stack {stack} destroyed")
    )


@app.command()
def demo(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name.")] = "demo",
    keep: Annotated[bool, typer.Option(help="Leave the site running to browse it.")] = False,
    probe_rate: Annotated[float, typer.Option(help="Probe requests per second.")] = 400.0,
    as_json: JsonOpt = False,
) -> None:
    """A full smooth deployment on this machine: a fresh stack on v1, then v2 under load."""
    env = _env()
    driver = Driver(env, stack, _say)
    from zdd.stack import Stack

    if Stack.exists(env, stack):
        _say(f"removing the previous {stack} stack")
        _run(as_json, driver.destroy)
        driver = Driver(env, stack, _say)
    try:
        _run(as_json, lambda: driver.init("local", "v1"))
        result = _deploy(driver, "v2", Mode.READ_ONLY, False, True, probe_rate, as_json)
        _emit(result.as_json(), as_json, lambda: _print_deploy(result.as_json()))
    finally:
        if not keep:
            _run(as_json, driver.destroy)
        else:
            _say(
                f"the site stays up at {driver.status().public_url}; `zdd destroy -s {stack} --yes`"
            )


def _print_status(status: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in status.items():
        if value is not None:
            table.add_row(key.replace("_", " "), str(value))
    err.print(table)


def _print_deploy(report: dict[str, Any]) -> None:
    err.print(
        f"[bold]{report['outcome']}[/bold]: {report['from_version']} -> {report['to_version']} "
        f"on {report['stack']} ({report['mode']})"
    )
    table = Table("phase", "seconds")
    for phase in report["phases"]:
        table.add_row(phase["name"], f"{phase['seconds']:.2f}")
    err.print(table)
    if report.get("read_only_window_seconds") is not None:
        err.print(f"read-only window: {report['read_only_window_seconds']:.2f}s")
    if report.get("probe"):
        probe = report["probe"]
        err.print(
            "probe: {requests} requests, {failed} failed, {writes_acknowledged} writes "
            "acknowledged, {writes_refused} refused, {writes_lost} lost".format(**probe)
        )


if __name__ == "__main__":
    app()
