"""The language host's `RunPlugin` (how the engine starts the policy pack), without the engine:
output streamed as it comes, the exit code last, the engine's environment and working
directory, and a plugin stopped when the engine cancels the call."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime.proto import language_pb2

from tests.helpers.commands import ROOT
from zdd.langhost import ProgramLanguageServer, plugin_interpreter

PLUGIN = textwrap.dedent(
    """
    import os, sys, time
    print(f"pid={os.getpid()} cwd={os.getcwd()} greeting={os.environ.get('GREETING')}")
    sys.stderr.write("to stderr\\n")
    if sys.argv[1:] == ["exit"]:
        sys.exit(3)
    time.sleep(120)
    """
)


class FakeContext:
    """What the gRPC server gives a streaming call: callbacks run when the call ends."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.active = True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return self.active

    def abort(self, _code: Any, details: str) -> None:
        raise RuntimeError(details)

    def cancel(self) -> None:
        self.active = False
        for callback in self.callbacks:
            callback()


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    directory = tmp_path / "plugin"
    directory.mkdir()
    (directory / "__main__.py").write_text(PLUGIN)
    return directory


def request(plugin: Path, pwd: Path, *args: str) -> Any:
    info = language_pb2.ProgramInfo(
        root_directory=str(plugin), program_directory=str(plugin), entry_point="."
    )
    env = [f"{key}={value}" for key, value in os.environ.items()] + ["GREETING=hello"]
    return language_pb2.RunPluginRequest(pwd=str(pwd), args=list(args), env=env, info=info)


def collect(responses: Iterator[Any]) -> tuple[bytes, bytes, list[int]]:
    stdout, stderr, codes = b"", b"", []
    for response in responses:
        kind = response.WhichOneof("output")
        if kind == "stdout":
            stdout += response.stdout
        elif kind == "stderr":
            stderr += response.stderr
        else:
            codes.append(response.exitcode)
    return stdout, stderr, codes


def test_run_plugin_streams_output_then_the_exit_code(plugin: Path, tmp_path: Path):
    responses = ProgramLanguageServer().RunPlugin(request(plugin, tmp_path, "exit"), FakeContext())
    stdout, stderr, codes = collect(responses)
    assert f"cwd={tmp_path} greeting=hello" in stdout.decode()
    assert stderr == b"to stderr\n"
    assert codes == [3]


def test_run_plugin_stops_the_plugin_when_the_engine_cancels(plugin: Path, tmp_path: Path):
    context = FakeContext()
    responses = ProgramLanguageServer().RunPlugin(request(plugin, tmp_path), context)
    # The first line comes through while the plugin still runs: never held back in a buffer.
    first = next(r for r in responses if r.WhichOneof("output") == "stdout")
    pid = int(first.stdout.decode().split()[0].removeprefix("pid="))
    rest: list[Any] = []
    reader = threading.Thread(target=lambda: rest.extend(responses))
    reader.start()
    context.cancel()
    reader.join(timeout=10)
    assert not reader.is_alive()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert all(r.WhichOneof("output") != "exitcode" for r in rest)


def test_plugin_runs_on_the_virtualenv_it_names(tmp_path: Path):
    python, venv = plugin_interpreter(ROOT / "policies", {"virtualenv": "../.venv"})
    assert venv == (ROOT / ".venv").resolve()
    assert python == str(venv / "bin" / "python")
    # No such environment: this host's own interpreter (it has the SDKs).
    assert plugin_interpreter(tmp_path, {"virtualenv": "venv"}) == (sys.executable, None)
    assert plugin_interpreter(tmp_path, {}) == (sys.executable, None)


PACK = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    print(f"pid={os.getpid()}")
    sys.stderr.write("to stderr\\n")
    while not Path(__file__).with_name("go").exists():
        time.sleep(0.02)
    sys.exit(4)
    """
)


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    directory = tmp_path / "pack"
    directory.mkdir()
    (directory / "PulumiPolicy.yaml").write_text("runtime: python\n")
    (directory / "__main__.py").write_text(PACK)
    return directory


def test_a_policy_pack_runs_in_the_host_and_only_its_own_output_is_streamed(
    pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    responses = ProgramLanguageServer().RunPlugin(request(pack, tmp_path), FakeContext())
    first = next(r for r in responses if r.WhichOneof("output") == "stdout")
    # The program runs in this process meanwhile: what it prints stays on the host's output.
    print("from the program")
    (pack / "go").touch()
    stdout, stderr, codes = collect(responses)
    assert first.stdout + stdout == f"pid={os.getpid()}\n".encode()
    assert stderr == b"to stderr\n"
    assert codes == [4]
    assert "from the program" in capsys.readouterr().out


def test_a_policy_pack_runs_in_its_own_process_where_it_would_reconfigure_the_program(
    pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Given a project, stack and dry-run setting, pulumi-policy reconfigures the Pulumi runtime.
    for name, value in (("PULUMI_PROJECT", "p"), ("PULUMI_STACK", "s"), ("PULUMI_DRY_RUN", "true")):
        monkeypatch.setenv(name, value)
    (pack / "go").touch()
    stdout, _stderr, codes = collect(
        ProgramLanguageServer().RunPlugin(request(pack, tmp_path), FakeContext())
    )
    assert stdout.startswith(b"pid=") and stdout != f"pid={os.getpid()}\n".encode()
    assert codes == [4]
