"""The real Pulumi engine through the Automation API, with no download: our built CLI, our
language host and the SDK's dynamic-provider plugin, on a throwaway local file backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from tests.helpers.commands import ROOT
from zdd.environment import Environment
from zdd.stack import Stack
from zdd.targets.azure import AZURE

pytestmark = pytest.mark.engine

PROGRAM = textwrap.dedent(
    '''
    import subprocess
    import pulumi
    from pulumi.dynamic import CreateResult, ResourceProvider, Resource

    class Echo(ResourceProvider):
        """Runs a command at create and keeps what it printed, like a command resource."""

        def create(self, props):
            out = subprocess.run(props["command"], shell=True, capture_output=True, text=True)
            return CreateResult(id_="echo", outs={**props, "stdout": out.stdout.strip()})

    class Command(Resource):
        stdout: pulumi.Output[str]

        def __init__(self, name, command):
            super().__init__(Echo(), name, {"command": command, "stdout": None})

    cmd = Command("hello", "echo hello from the engine")
    pulumi.export("stdout", cmd.stdout)
    '''
)


def test_up_preview_destroy_round_trip(tmp_path: Path, engine_env: dict[str, str]) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: engine-check\nruntime: python\n")
    (tmp_path / "__main__.py").write_text(PROGRAM)
    # The CLI that setup built reports the version of the pinned SDK.
    cli = subprocess.run(["pulumi", "version"], env=engine_env, capture_output=True, text=True)
    assert cli.stdout.strip() == f"v{installed_version('pulumi')}"

    command = auto.PulumiCommand(root=str(Path(sys.executable).parent.parent))
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path), env_vars=engine_env, pulumi_command=command
    )
    stack = auto.create_stack("roundtrip", work_dir=str(tmp_path), opts=opts)
    try:
        up = stack.up()
        assert up.summary.result == "succeeded"
        assert up.outputs["stdout"].value == "hello from the engine"
        preview = stack.preview()
        assert preview.change_summary == {auto.OpType.SAME: 2}
        destroyed = stack.destroy()
        assert destroyed.summary.resource_changes == {"delete": 2}
    finally:
        stack.workspace.remove_stack("roundtrip")
    assert "roundtrip" not in {s.name for s in stack.workspace.list_stacks()}
    # No plugin was downloaded into the isolated Pulumi home.
    plugins = Path(engine_env["PULUMI_HOME"]) / "plugins"
    assert not plugins.exists() or not any(plugins.iterdir())


def test_a_config_change_is_written_whole_or_not_at_all(
    engine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in engine_env.items():
        monkeypatch.setenv(key, value)
    stack = Stack.create(Environment(ROOT), f"test-config-{uuid.uuid4().hex[:8]}")
    try:
        deploying = {"phase": "deploy", "currentVersion": "v1", "targetVersion": "v2"}
        stack.set_config({**deploying, "restorePoint": "rp-1", "migrateTo": "v2"})
        finished: dict[str, str | None] = {
            "phase": "idle",
            "currentVersion": "v2",
            "targetVersion": None,
            "restorePoint": None,
            "migrateTo": None,
        }
        before = stack.config_file.read_text()

        def crash(*_: object) -> None:
            raise KeyboardInterrupt  # the driver dies in the middle of writing

        with monkeypatch.context() as during:
            during.setattr(os, "replace", crash)
            with pytest.raises(KeyboardInterrupt):
                stack.set_config(finished)
        assert stack.config_file.read_text() == before  # all of the old config, nothing new

        stack.set_config(finished)
        shown = subprocess.run(
            ["pulumi", "config", "--json", "-s", stack.name],
            cwd=ROOT,
            env=engine_env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert {k: v["value"] for k, v in json.loads(shown.stdout).items()} == {
            "zdd:phase": "idle",
            "zdd:currentVersion": "v2",
        }
        # A second object on the same stack (two handles in one CI script) sees each write.
        other = Stack.select(Environment(ROOT), stack.name)
        assert other.config()["phase"] == "idle"
        stack.set_config({"phase": "clone", "targetVersion": "v3"})
        assert (other.config()["phase"], other.config()["targetVersion"]) == ("clone", "v3")
    finally:
        stack.remove()
        stack.config_file.unlink(missing_ok=True)


def test_the_generated_sql_password_is_written_encrypted(
    engine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in engine_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ZDD_AZURE_OPERATOR_IP_ADDRESSES", "203.0.113.7")
    stack = Stack.create(Environment(ROOT), f"test-secret-{uuid.uuid4().hex[:8]}")
    try:
        config = AZURE.initial_config(Environment(ROOT), stack.name)
        password = config["sqlAdminPassword"]
        stack.set_config(config)
        written = yaml.safe_load(stack.config_file.read_text())["config"]
        # Ciphertext in the file, never the password itself.
        assert password not in stack.config_file.read_text()
        assert set(written["zdd:sqlAdminPassword"]) == {"secure"}
        shown = subprocess.run(
            ["pulumi", "config", "--json", "--show-secrets", "-s", stack.name],
            cwd=ROOT,
            env=engine_env,
            capture_output=True,
            text=True,
            check=True,
        )
        # The program still gets the password, as a secret.
        entry = json.loads(shown.stdout)["zdd:sqlAdminPassword"]
        assert (entry["value"], entry["secret"]) == (password, True)
    finally:
        stack.remove()
        stack.config_file.unlink(missing_ok=True)
