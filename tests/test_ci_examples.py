"""The CI examples in docs/ci/ parse, and every `zdd` command and flag they run exists."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
import yaml

from tests.helpers.commands import ROOT
from zdd.cli import app

EXAMPLES = sorted((ROOT / "docs" / "ci").glob("*.yml"))
# Where a script stops one command and starts another.
SHELL_OPERATORS = {">", ">>", "|", "||", "&&", ";", "2>", "2>&1"}
# `${VAR:+--flag}`: the flag is given only when VAR is set (e.g. --wait-for-approval).
CONDITIONAL_FLAG = re.compile(r"^\$\{\w+:\+(-[-\w]+)\}$")


# The keys whose values are shell scripts: GitHub's `run`, Azure Pipelines' `script`, `bash` and
# the AzureCLI task's `inlineScript`.
SCRIPT_KEYS = {"run", "script", "bash", "inlineScript"}


def scripts(node: Any) -> Iterator[str]:
    """Every shell script in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCRIPT_KEYS and isinstance(value, str):
                yield value
            else:
                yield from scripts(value)
    elif isinstance(node, list):
        for value in node:
            yield from scripts(value)


def zdd_calls(script: str) -> Iterator[tuple[str, list[str]]]:
    """(command, flags) of each `zdd` run in a shell script, continuation lines joined."""
    for line in script.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # not a shell line (a YAML description, say)
        for at, word in enumerate(words):
            if word == "zdd" or word.endswith("/zdd"):
                rest = words[at + 2 :]
                end = next((i for i, w in enumerate(rest) if w in SHELL_OPERATORS), len(rest))
                flags = [m[1] if (m := CONDITIONAL_FLAG.match(w)) else w for w in rest[:end]]
                yield words[at + 1], [f for f in flags if f.startswith("-")]


def calls_in(example: Path) -> list[tuple[str, list[str]]]:
    document = yaml.safe_load(example.read_text())
    return [call for text in scripts(document) for call in zdd_calls(text)]


def test_both_examples_are_there() -> None:
    assert [p.name for p in EXAMPLES] == ["azure-pipelines.yml", "github-actions.yml"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_zdd_command_and_flag_exists(example: Path) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    calls = calls_in(example)
    for command, flags in calls:
        assert command in group.commands, (example.name, command)
        known = {
            opt
            for param in group.commands[command].params
            for opt in param.opts + param.secondary_opts
        }
        unknown = [flag for flag in flags if flag not in known]
        assert not unknown, (example.name, command, unknown)
    commands = {command for command, _ in calls}
    assert {"deploy", "complete", "status"} <= commands
    deploy_flags = {flag for command, flags in calls if command == "deploy" for flag in flags}
    assert {"--json", "--chart", "--probe", "--wait-for-approval", "--yes"} <= deploy_flags


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_failure_names_the_recovery_and_the_report_is_kept(example: Path) -> None:
    text = example.read_text()
    # Every zdd run writes one JSON document; a failure shows its `error`, which names the
    # recoveries, and the reports and the chart are published whatever happened.
    assert all("--json" in flags for _, flags in calls_in(example))
    assert text.count("jq -r .error") + text.count("jq -r '.error") >= 2
    assert "always()" in text
    assert "timeline.png" in text


def _variables(example: Path) -> dict[str, str]:
    """The environment a job's steps get: GitHub's `env`, Azure Pipelines' `variables`."""
    document = yaml.safe_load(example.read_text())
    if isinstance(document.get("variables"), list):
        return {v["name"]: str(v["value"]) for v in document["variables"] if "name" in v}
    return {k: str(v) for k, v in document["env"].items()}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_credentials_renew_for_the_whole_deployment(example: Path) -> None:
    # The runner's managed identity, for the provider and the driver: no token handed over once
    # (an OIDC token lasts minutes) and no CLI login made from one (it cannot refresh).
    variables = _variables(example)
    assert variables["ARM_USE_MSI"] == "true" and "ARM_CLIENT_ID" in variables
    text = example.read_text()
    for once in ("ARM_OIDC_TOKEN", "idToken", "azure/login", "AzureCLI@", "addSpnToEnvironment"):
        assert once not in text, (example.name, once)


def test_the_examples_log_in_to_a_real_backend() -> None:
    github = yaml.safe_load((ROOT / "docs" / "ci" / "github-actions.yml").read_text())
    uses = {step.get("uses", "").split("@")[0] for step in github["jobs"]["deploy"]["steps"]}
    assert "actions/upload-artifact" in uses
    for example in EXAMPLES:
        text = example.read_text()
        assert "PULUMI_CONFIG_PASSPHRASE" in text
        assert 'pulumi login "$PULUMI_BACKEND_URL"' in text
        assert "azblob://" in text
