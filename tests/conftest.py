"""Shared fixtures: an isolated Pulumi backend per test session, local stacks that are
always destroyed (and their processes stopped) at the end of the test that made them, and
loopback stand-ins for Azure's endpoints. Helpers they use live in tests/helpers."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.commands import (
    PROBE_RATE,
    ROOT,
    Result,
    processes_naming,
    run,
    stack_dir,
)
from tests.helpers.postgres import SAMPLE_ON_POSTGRESQL
from tests.helpers.stand_in import Answer, StandIn
from zdd.environment import STATE_ROOT, archive_dir
from zdd.processes import find_owned_under

# pytest-xdist gives its workers COLUMNS=80; what `zdd` prints must not depend on the runner's
# terminal (a user's own COLUMNS still decides the width of its tables).
os.environ.pop("COLUMNS", None)


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
        "ZDD_PROBE_RATE": str(PROBE_RATE),
    }
    (base / "state").mkdir()
    return env


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
        # A read-write clone's archives outlive `zdd destroy` (they are the user's), and
        # destroying a clone that is still there archives it too: the test's go with it.
        shutil.rmtree(archive_dir(ROOT / STATE_ROOT, name), ignore_errors=True)
        assert destroyed.code == 0, destroyed.stderr
        state_dir = stack_dir(name)
        assert not state_dir.exists()
        assert not (ROOT / STATE_ROOT / "locks" / f"{name}.lock").exists(), "driver lock left"
        assert find_owned_under(state_dir) == [], f"processes left running for {name}"
        assert processes_naming(state_dir) == [], f"a server left running for {name}"


@pytest.fixture
def pg_v1(local_stack: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A local stack of the sample site at v1 on its own PostgreSQL cluster."""
    return local_stack("v1", app=SAMPLE_ON_POSTGRESQL)


@pytest.fixture
def stand_in() -> Iterator[Callable[[Callable[[str], Answer]], StandIn]]:
    """`start(answer)` starts a loopback server answering with `answer(path)`; all are stopped
    at the end of the test."""
    started: list[StandIn] = []

    def start(answer: Callable[[str], Answer]) -> StandIn:
        started.append(StandIn(answer))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run the real engine first, the longest of them (`engine(minutes=N)`) first of
    all: each takes seconds to minutes, the others milliseconds, so started first they overlap
    with everything else instead of leaving one worker running a deployment alone at the end."""

    def order(item: pytest.Item) -> float:
        engine = item.get_closest_marker("engine")
        return -float(engine.kwargs.get("minutes", 1)) if engine else 0.0

    items.sort(key=order)
