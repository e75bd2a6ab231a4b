"""Data safety and guardrails on the real engine: read-write mode reports and archives what
the clone was given, secrets never appear in plain text, and bad input is refused with a
clear one-line error, a non-zero exit code and the stack unchanged."""

from __future__ import annotations

import secrets
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.commands import ROOT, Result, config_file, run, stack_dir
from tests.helpers.driver import read_write_deployment, snapshot
from zdd.environment import STATE_ROOT

pytestmark = pytest.mark.engine


def test_read_write_deployment_reports_and_archives_exactly_what_the_clone_took(
    local_stack: Callable[[str], dict[str, Any]], zdd: Callable[..., Result]
) -> None:
    name = local_stack("v1")["stack"]
    lost, taken = read_write_deployment(zdd, name)
    with sqlite3.connect(lost["archive"]) as archive:
        archived = {r[0] for r in archive.execute("SELECT title FROM articles")}
    assert taken <= archived


def test_secrets_never_appear_in_plain_text(
    local_stack: Callable[[str], dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
    engine_env: dict[str, str],
) -> None:
    name = local_stack("v1")["stack"]
    # A secret of the user's own in the stack's config rides along every phase's update.
    token = secrets.token_urlsafe(24)
    assert pulumi("config", "set", "--secret", "-s", name, "apiKey", token).code == 0
    deployed = zdd("deploy", "-s", name, "--version", "v2", "--yes", "--json")
    assert deployed.code == 0, deployed.stderr
    places = {
        "state": pulumi("stack", "export", "-s", name).stdout,
        "outputs": pulumi("stack", "output", "-s", name, "--json").stdout,
        "history": zdd("history", "-s", name, "--json").stdout
        + pulumi("stack", "history", "-s", name, "--json").stdout,
        "report": deployed.stdout + deployed.stderr,
        "status": zdd("status", "-s", name, "--json").stdout,
        "config": config_file(name).read_text(),
    }
    state_root = Path(engine_env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    places["backend files"] = "".join(
        p.read_text(errors="replace") for p in state_root.rglob("*") if p.is_file()
    )
    places["logs"] = "".join(p.read_text(errors="replace") for p in stack_dir(name).glob("*.log"))
    leaks = [where for where, text in places.items() if token in text]
    assert leaks == []
    # The local front door has no secret of its own (HAProxy's admin socket is a 0600 file).
    assert "secret" not in places["outputs"]


def test_bad_input_is_refused_with_one_clear_line_and_changes_nothing(
    local_stack: Callable[[str], dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    name = local_stack("v1")["stack"]
    config = config_file(name)

    cases: list[tuple[list[str], int, str]] = [
        (["deploy", "-s", name, "--version", "v2;rm", "--yes"], 2, "malformed"),
        (["deploy", "-s", name, "--version", "v9", "--yes"], 2, "'v9' has no release folder"),
        (["deploy", "-s", name, "--version", "v1", "--yes"], 2, "already runs v1"),
        (
            ["deploy", "-s", name, "--version", "v2", "--mode", "read-write", "--yes"],
            2,
            "--accept-data-loss",
        ),
        (
            ["deploy", "-s", name, "--version", "v2", "--on-failure", "pray", "--yes"],
            2,
            "--on-failure must be one of",
        ),
        (["deploy", "-s", "no-such-stack", "--version", "v2", "--yes"], 2, "no stack named"),
        (["status", "-s", "bad/name"], 2, "is not valid"),
        (["init", "-s", name, "--version", "v1"], 2, "already exists"),
        (["init", "-s", "fresh-one", "--version", "v1", "--target", "mars"], 2, "not one of"),
        (["rollback", "-s", name, "--code-only"], 3, "no deployment in progress"),
        (["rollback", "-s", name, "--with-database"], 3, "no deployment in progress"),
        (["rollback", "-s", name], 2, "say which rollback"),
        (["rollback", "-s", name, "--code-only", "--with-database"], 2, "say which rollback"),
        (["rollforward", "-s", name, "--version", "v2"], 3, "no deployment in progress"),
        (["abort", "-s", name], 3, "nothing to abort"),
        (["complete", "-s", name], 3, "no deployment is awaiting approval"),
        (["resume", "-s", name], 2, "no deployment in progress"),
        (["preview", "-s", name, "teleport"], 2, "unknown action or phase"),
        (["preview", "-s", name, "deploy"], 2, "needs a version"),
        (["preview", "-s", name, "cutover"], 3, "cannot move from phase idle to cutover"),
        (["destroy", "-s", name], 2, "confirm with --yes"),
    ]
    before = snapshot(pulumi, name)
    for args, code, message in cases:
        result = zdd(*args, "--json")
        assert result.code == code, (args, result.stdout, result.stderr)
        error = result.json()["error"]
        assert message in error, (args, error)
        assert "Traceback" not in result.stderr, args
        assert snapshot(pulumi, name) == before, args
    # Nothing is made for a stack that does not exist, not even a driver lock.
    assert not (ROOT / STATE_ROOT / "locks" / "no-such-stack.lock").exists()

    # Config that the program refuses: an unknown phase, a missing key, a broken file.
    for key, value, message in [
        ("zdd:phase", "sideways", "zdd:phase 'sideways' is not one of"),
        ("zdd:databaseGeneration", "two", "whole number"),
    ]:
        assert pulumi("config", "set", "-s", name, key, value).code == 0
        result = zdd("deploy", "-s", name, "--version", "v2", "--yes", "--json")
        assert result.code == 2 and message in result.json()["error"], result.stdout
    assert pulumi("config", "set", "-s", name, "zdd:phase", "idle").code == 0
    assert pulumi("config", "set", "-s", name, "zdd:databaseGeneration", "1").code == 0
    # Tuning keys reach timeouts, file counts and ports: malformed ones are refused up front.
    for key, value, message in [
        ("zdd:gateTimeoutSeconds", "soon", "zdd:gateTimeoutSeconds 'soon' must be a number"),
        ("zdd:archiveRetention", "0", "zdd:archiveRetention '0' must be a whole number from 1"),
        ("zdd:basePort", "80", "zdd:basePort '80' must be a whole number from 1024"),
    ]:
        kept = pulumi("config", "get", "-s", name, key)
        assert pulumi("config", "set", "-s", name, key, value).code == 0
        result = zdd("deploy", "-s", name, "--version", "v2", "--yes", "--json")
        assert result.code == 2 and message in result.json()["error"], result.stdout
        assert "Traceback" not in result.stderr
        restored = ("set", "-s", name, key, kept.stdout.strip()) if kept.code == 0 else None
        assert pulumi("config", *(restored or ("rm", "-s", name, key))).code == 0
    assert pulumi("config", "rm", "-s", name, "zdd:currentVersion").code == 0
    missing = zdd("status", "-s", name, "--json")
    assert missing.code == 2 and "currentVersion is not set" in missing.json()["error"]
    assert pulumi("config", "set", "-s", name, "zdd:currentVersion", "v1").code == 0
    good = config.read_text()
    config.write_text(good + "\n  zdd:broken: [unclosed\n")
    broken = zdd("status", "-s", name, "--json")
    config.write_text(good)
    assert broken.code == 2 and "cannot read the config" in broken.json()["error"]
    assert snapshot(pulumi, name)[0] == before[0]


REFUSING_PACK = """
from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy


def no_clone(args, report_violation):
    if args.name == "clone-process":
        report_violation("clones are not allowed by this test pack")


PolicyPack(
    name="test-refusals",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[ResourceValidationPolicy(name="no-clone-test", description="t", validate=no_clone)],
)
"""


def test_a_policy_violation_stops_the_deployment_before_any_change(
    local_stack: Callable[[str], dict[str, Any]],
    pulumi: Callable[..., Result],
    engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    name = local_stack("v1")["stack"]
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "__main__.py").write_text(REFUSING_PACK)
    venv = Path(sys.executable).parent.parent
    (pack / "PulumiPolicy.yaml").write_text(
        f"runtime:\n  name: python\n  options:\n    virtualenv: {venv}\n"
    )
    before = snapshot(pulumi, name)
    refused = run(
        [
            sys.executable,
            "-m",
            "zdd.cli",
            "deploy",
            "-s",
            name,
            "--version",
            "v2",
            "--yes",
            "--json",
        ],
        {**engine_env, "ZDD_POLICY_PACK": str(pack)},
    )
    assert refused.code == 7, refused.stderr
    assert "no-clone-test (clone-process)" in refused.json()["error"]
    # Neither the state nor the config changed: the deployment never started.
    assert snapshot(pulumi, name) == before
