"""Shared fixtures: an isolated Pulumi backend per test session, and local stacks that are
always destroyed (and their processes stopped) at the end of the test that made them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from zdd.environment import STATE_ROOT
from zdd.environment import stack_dir as stack_dir_under
from zdd.processes import find_owned_under

ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist gives its workers COLUMNS=80; what `zdd` prints must not depend on the runner's
# terminal (a user's own COLUMNS still decides the width of its tables).
os.environ.pop("COLUMNS", None)


def processes_naming(folder: Path) -> list[int]:
    """Pids of any user's processes whose command line names `folder` (a database server runs
    as its own OS user, out of reach of the owner ids)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.name.isdigit() and f"{folder}/" in cmdline:
            found.append(int(entry.name))
    return found


def stack_dir(name: str) -> Path:
    """Where a local stack's own files live."""
    return stack_dir_under(ROOT / STATE_ROOT, name)


@pytest.fixture(scope="session")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI and driver runs: a throwaway file backend and Pulumi home."""
    base = tmp_path_factory.mktemp("pulumi")
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_HOME": str(base / "home"),
        "PULUMI_CONFIG_PASSPHRASE": "test-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_PYTHON_CMD": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (base / "state").mkdir()
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def build_releases(app: str, *versions: str) -> None:
    """A real application's releases, built once and cached across sessions
    (apps/<app>/build_releases.py, apps/release_cache.py)."""
    built = subprocess.run(
        [sys.executable, "-m", f"apps.{app}.build_releases", *versions],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    print(built.stdout, end="")


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> Result:
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def zdd(engine_env: dict[str, str]) -> Callable[..., Result]:
    """Run the `zdd` command as a user would."""

    def call(*args: str, timeout: float = 600) -> Result:
        return run([sys.executable, "-m", "zdd.cli", *args], engine_env, timeout)

    return call


@pytest.fixture
def pulumi(engine_env: dict[str, str]) -> Callable[..., Result]:
    """Run the Pulumi CLI in the project, as the README's by-hand sequence does."""

    def call(*args: str, timeout: float = 600) -> Result:
        return run(["pulumi", *args], engine_env, timeout)

    return call


@pytest.fixture
def local_stack(zdd: Callable[..., Result]) -> Iterator[Callable[..., dict[str, Any]]]:
    """`make(version)` creates a local stack at `version`; all are destroyed afterwards and
    the test fails if any of their processes is left running."""
    made: list[str] = []

    def make(version: str = "v1", app: Path | None = None) -> dict[str, Any]:
        name = f"test-{uuid.uuid4().hex[:8]}"
        made.append(name)
        spec = ["--app", str(app)] if app else []
        result = zdd("init", "--stack", name, "--version", version, *spec, "--json")
        assert result.code == 0, result.stderr
        status: dict[str, Any] = result.json()
        return status

    yield make
    for name in made:
        destroyed = zdd("destroy", "--stack", name, "--yes")
        assert destroyed.code == 0, destroyed.stderr
        state_dir = stack_dir(name)
        assert not state_dir.exists()
        assert find_owned_under(state_dir) == [], f"processes left running for {name}"
        assert processes_naming(state_dir) == [], f"a server left running for {name}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run the real engine first, the longest of them (`engine(minutes=N)`) first of
    all: each takes seconds to minutes, the others milliseconds, so started first they overlap
    with everything else instead of leaving one worker running a deployment alone at the end."""

    def order(item: pytest.Item) -> float:
        engine = item.get_closest_marker("engine")
        return -float(engine.kwargs.get("minutes", 1)) if engine else 0.0

    items.sort(key=order)
