"""What the CLI prints is text (engine output with brackets never breaks an error or a preview),
and every error exits with the one code its class has."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from tests.helpers.commands import ROOT
from zdd import appspec, cli, phases, registry
from zdd.errors import BadInput, EngineFailed, RefusedTransition, exit_codes

# What the engine said when a provider plugin was killed mid-update.
ENGINE_TEXT = "error reading from server: EOF [/work/.venv/bin/pulumi-resource-pulumi-python]"


def test_an_error_with_brackets_keeps_its_exit_code_and_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as ended:
        cli._fail(EngineFailed(ENGINE_TEXT), as_json=False)
    assert ended.value.exit_code == EngineFailed.exit_code
    assert "[/work/.venv/bin/pulumi-resource-pulumi-python]" in capsys.readouterr().err


def test_a_preview_diff_with_brackets_is_printed_as_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._print_preview({"diff": f"~ front-door [diff: ~active] {ENGINE_TEXT}", "changes": {}})
    assert "[diff: ~active]" in capsys.readouterr().err


def test_help_and_readme_list_every_exit_code_the_errors_have() -> None:
    shown = " ".join(CliRunner().invoke(cli.app, ["--help"], terminal_width=200).output.split())
    readme = (ROOT / "README.md").read_text()
    for code, meaning in exit_codes().items():
        assert f"{code} {meaning}" in shown
        assert f"\n| {code} |" in readme
    assert "| 8 |" not in readme


def test_errors_of_the_pure_modules_exit_with_their_own_code() -> None:
    with pytest.raises(RefusedTransition):
        phases.check_transition(phases.Phase.DEPLOY, phases.Phase.IDLE, switches_in_program=True)
    with pytest.raises(BadInput):
        phases.PhaseSettings.from_config({"phase": "idle"})
    with pytest.raises(BadInput):
        registry.entry("nowhere")
    with pytest.raises(BadInput):
        appspec.parse_file_text("start: 1\n", "/")


# A clone of the project deep in a CI runner's workspace: what `zdd` says about its archive.
DEEP_ARCHIVE = (
    "/home/runner/work/" + "/".join(["a-checkout-folder-with-a-long-name"] * 6)
    + "/.zdd/archive/site/clone-g1-20250101T000000Z.sqlite"
)  # fmt: skip


def test_piped_output_keeps_long_paths_and_tables_whole() -> None:
    # A new process with its output piped, as `make chaos`, CI and the tests run the command.
    code = (
        "from zdd import chaos, cli\n"
        f"cli._say('the clone database is kept as their archive: {DEEP_ARCHIVE}')\n"
        "run = chaos.ChaosRun(1, 'front door', killed_pid=1, killed_in_phase='cutover',"
        " outcome='idle', final_version='v2', requests=4000)\n"
        "chaos.say(chaos._table([run]))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    lines = done.stderr.splitlines()
    assert any(DEEP_ARCHIVE in line for line in lines), done.stderr
    header = next(line for line in lines if "#" in line and "killed" in line)
    assert "front door down s" in header and "failed while down" in header
    row = next(line for line in lines if "front door" in line and "cutover" in line)
    assert all(cell in row for cell in ("idle", "v2", "4000")), row


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--probe-rate", "0"], {}), ([], {"ZDD_PROBE_RATE": "-5"}), ([], {"ZDD_PROBE_RATE": "1e9"})],
)
def test_a_probe_rate_out_of_range_is_refused_before_the_stack_is_read(
    args: list[str], env: dict[str, str]
) -> None:
    result = CliRunner().invoke(
        cli.app, ["deploy", "-s", "no-such-stack", "--version", "v2", "--probe", *args], env=env
    )
    assert result.exit_code == 2
    assert "probe-rate" in result.output and "no stack named" not in result.output
