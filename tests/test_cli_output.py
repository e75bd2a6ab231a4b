"""What the CLI prints is text: engine output with brackets never breaks an error or a preview."""

from __future__ import annotations

import pytest
import typer

from zdd import cli
from zdd.errors import EngineFailed

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
