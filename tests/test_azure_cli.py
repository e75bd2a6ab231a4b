"""`zdd` on an Azure stack with no Azure credentials, run as a user would (a subprocess with a
scrubbed environment): every command that could change something stops in one line, exit 2,
before it changes anything; `status` still reads the stack (it asks nothing of Azure).

The stack lives in a throwaway copy of the project (its `Pulumi.yaml`, the program by a link)
with a file backend of its own, so nothing of the project's stacks is touched. No network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.azure_mocks import app_spec
from tests.helpers.commands import ROOT

STACK = "shop"
CONFIG = {
    "zdd:target": "azure",
    "zdd:phase": "idle",
    "zdd:currentVersion": "v1",
    "zdd:app": app_spec(),
    "zdd:namePrefix": "zdd-shop-a1b2c3",
    "zdd:operatorIpAddresses": "203.0.113.7",
}


@dataclass(frozen=True)
class Project:
    folder: Path
    env: dict[str, str]

    @property
    def config_file(self) -> Path:
        return self.folder / "stacks" / f"Pulumi.{STACK}.yaml"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def zdd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "zdd.cli", *args)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("azure-project")
    shutil.copy(ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
    (folder / "infra").symlink_to(ROOT / "infra")
    (folder / "stacks").mkdir()
    (folder / "state").mkdir()
    home = folder / "home"
    # Only what a CI runner without Azure has: no ARM_*/AZURE_* variables, no `az login`.
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
        "PULUMI_HOME": str(home / ".pulumi"),
        "PULUMI_BACKEND_URL": f"file://{folder / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "the operator's own",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The CLI's console wraps at the terminal's width (80 without one).
        "COLUMNS": "400",
    }
    made = Project(folder, env)
    created = made.run("pulumi", "stack", "init", STACK, "--non-interactive")
    assert created.returncode == 0, created.stderr
    document = yaml.safe_load(made.config_file.read_text())
    document["config"] = CONFIG
    made.config_file.write_text(yaml.safe_dump(document))
    yield made


@pytest.mark.parametrize(
    "command",
    [
        ["deploy", "--version", "v2"],
        ["resume"],
        ["rollback", "--with-database"],
        ["deploy", "--version", "v2", "--json"],
    ],
)
def test_no_credentials_stop_every_change_in_one_line(project: Project, command: list[str]):
    before = project.config_file.read_bytes()
    done = project.zdd(*command, "--stack", STACK)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no Azure credentials: run `az login`")
    assert "nothing was changed" in lines[0] and "Traceback" not in done.stderr
    # Nothing changed: the config as it was, and no update ever ran.
    assert project.config_file.read_bytes() == before
    history = project.run("pulumi", "stack", "history", "--stack", STACK, "--json")
    assert history.returncode == 0 and history.stdout.strip() in ("", "[]"), history.stdout


def test_status_reads_the_stack_without_azure(project: Project):
    done = project.zdd("status", "--stack", STACK, "--json")
    assert done.returncode == 0, done.stderr
    assert '"phase": "idle"' in done.stdout and '"target": "azure"' in done.stdout
