"""What the CLI prints is text (engine output with brackets never breaks an error or a preview),
and every error exits with the one code its class has."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import ROOT
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
        phases.check_transition(phases.Phase.DEPLOY, phases.Phase.IDLE)
    with pytest.raises(BadInput):
        phases.StackSettings.from_config({"phase": "idle"})
    with pytest.raises(BadInput):
        registry.entry("nowhere")
    with pytest.raises(BadInput):
        appspec.parse_file_text("start: 1\n", "/")
