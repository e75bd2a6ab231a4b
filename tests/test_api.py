"""The public Python API (`import zdd`): what it exposes, what it refuses before any engine call,
and one smooth deployment through it on the real engine."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import zdd
from tests.helpers.commands import ROOT, stack_dir
from zdd.driver import Driver
from zdd.environment import Environment
from zdd.processes import find_owned_under
from zdd.stack import Stack


@pytest.fixture
def restore_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The API exports the engine's variables into this process: put them back afterwards."""
    for key in Environment(tmp_path).engine_env():
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, restore_environ: None) -> None:
    """Any call that would reach the Pulumi CLI fails the test."""

    def engine_called(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the engine was called")

    monkeypatch.setattr(Stack, "_workspace", classmethod(engine_called))


def test_import_loads_no_pulumi_module() -> None:
    # The Pulumi program imports the package's pure parts on every update.
    code = "import sys, zdd; print(any(m.split('.')[0] == 'pulumi' for m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_every_public_name_resolves() -> None:
    for name in zdd.__all__:
        assert getattr(zdd, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'deploy'"):
        _ = zdd.deploy


def test_each_error_class_has_its_own_exit_code() -> None:
    public = [getattr(zdd, name) for name in zdd.__all__]
    errors = [kind for kind in public if isinstance(kind, type) and issubclass(kind, zdd.ZddError)]
    codes = {error.exit_code: error.__name__ for error in errors}
    assert len(codes) == len(errors)
    assert sorted(codes) == list(range(1, 8))
    assert codes[2] == "BadInput" and codes[6] == "StackBusy"


CallApi = Callable[[Path], object]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: zdd.open_stack("bad/name", project=p), "is not valid"),
        (lambda p: zdd.init_stack("site", "v2;rm", project=p), "malformed"),
        (lambda p: zdd.open_stack("site", project=p).deploy("v2;rm"), "malformed"),
        (lambda p: zdd.open_stack("site", project=p).rollforward(""), "malformed"),
        (lambda p: zdd.open_stack("site", project=p).deploy("v2", on_failure="pray"), "one of"),
        (lambda p: zdd.open_stack("site", project=p).deploy("v2", on_failure="abort"), "one of"),
        (lambda p: zdd.open_stack("site", project=p).preview("deploy"), "needs a version"),
        (lambda p: zdd.open_stack("site", project=p).preview("teleport"), "unknown action"),
        (
            lambda p: zdd.open_stack("site", project=p).deploy("v2", probe=zdd.ProbeSettings(0)),
            "rate",
        ),
    ],
)
def test_bad_input_is_refused_before_any_engine_call(
    no_engine: None, tmp_path: Path, call: CallApi, message: str
) -> None:
    with pytest.raises(zdd.BadInput, match=message) as refused:
        call(tmp_path)
    assert refused.value.exit_code == 2


def test_an_azure_stack_needs_the_users_own_passphrase(
    no_engine: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    with pytest.raises(zdd.BadInput, match="needs your own secrets passphrase"):
        zdd.init_stack("prod", "v1", target="azure", project=tmp_path)
    # A local stack falls back to the project's passphrase.
    assert zdd.open_stack("site", project=tmp_path).name == "site"


def test_a_second_driver_is_refused_before_any_engine_call(no_engine: None, tmp_path: Path) -> None:
    holder = Driver(Environment(tmp_path), "site")
    stack = zdd.open_stack("site", project=tmp_path)
    with holder.exclusive(), pytest.raises(zdd.StackBusy) as busy:
        stack.deploy("v2")
    assert busy.value.exit_code == 6
    assert stack.last_result is None


@pytest.mark.engine
def test_init_deploy_status_and_destroy_through_the_api(
    engine_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    restore_environ: None,
    tmp_path: Path,
) -> None:
    for key, value in engine_env.items():
        monkeypatch.setenv(key, value)
    name = f"test-{uuid.uuid4().hex[:8]}"
    steps: list[str] = []
    stack = zdd.init_stack(name, "v1", project=ROOT, on_progress=steps.append)
    try:
        assert stack.status().current_version == "v1"
        chart = tmp_path / "timeline.png"
        result = stack.deploy("v2", probe=zdd.ProbeSettings(rate=50, chart=chart))
        assert result.outcome == "succeeded"
        assert (result.from_version, result.to_version) == ("v1", "v2")
        assert [p.name for p in result.phases] == ["clone", "return", "idle"]
        assert result.as_json()["read_only_window_seconds"] > 0
        assert result.probe is not None and result.probe["requests"] > 0
        assert (result.probe["failed"], result.probe["writes_lost"]) == (0, 0)
        assert chart.read_bytes().startswith(b"\x89PNG")
        status = zdd.open_stack(name, project=ROOT).status()
        assert (status.phase, status.current_version, status.traffic) == ("idle", "v2", "primary")
        assert not status.deployment_in_progress
        latest = stack.history()[0]
        assert (latest["outcome"], latest["to_version"]) == ("succeeded", "v2")
        assert any("gate:" in step for step in steps)
    finally:
        stack.destroy()
    assert not stack_dir(name).exists()
    assert find_owned_under(stack_dir(name)) == []
