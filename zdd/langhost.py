"""A Python language host for the Pulumi engine (`pulumi-language-python`).

Why it exists: Pulumi's own language host is a Go module
(`github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3`) that the module proxy
reachable from our build machines does not serve, so `make setup` cannot build it. The engine
only needs a process that serves the `LanguageRuntime` gRPC service and prints its port; the
Pulumi SDK already ships that service for inline Automation API programs
(`pulumi.automation._server.LanguageServer`). This module reuses it and adds the one thing an
inline server does not do: load the program named by `Pulumi.yaml`'s `main`.

It also serves `RunPlugin`, which the engine uses to start a plugin written in Python from its
directory; here that is the policy pack (`policies/`, `PulumiPolicy.yaml` with
`runtime: python`), started for `pulumi up/preview --policy-pack policies`. A policy pack on
this host's own interpreter runs in this process, in a thread: the engine asks the same host
to run the pack and then the program, and a second interpreter only to import the SDKs again
cost 0.35 s of CPU per update, a third of a small update's. Any other plugin runs in its own
process, `python <directory> <args>`, whose output and exit code stream back to the engine,
which stops it by cancelling the call.

Where a real Pulumi installation is present, the engine finds its bundled host beside the CLI
first and this one is never started.
"""

from __future__ import annotations

import contextlib
import os
import queue
import runpy
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

# The engine's plugin protocol allows large messages (resource state can be big).
_GRPC_OPTIONS = [("grpc.max_receive_message_length", 400 * 1024 * 1024)]
# A running plugin holds one worker for its whole life (a streaming call), besides the
# program's own calls: room for several policy packs.
_WORKERS = 16
_CHUNK = 64 * 1024
# The plugins this host runs, stopped with it.
_running_plugins: set[subprocess.Popen[bytes]] = set()
# The threads that run a policy pack here, and where each one's output goes.
_PACK_OUTPUTS: dict[int, queue.Queue[tuple[str, bytes | int]]] = {}


def _program_path(request: Any) -> Path:
    info = request.info
    if info and info.program_directory:
        entry = Path(info.program_directory) / (info.entry_point or ".")
    else:
        entry = Path(request.pwd or ".") / (request.program or ".")
    return entry.resolve()


class ProgramLanguageServer(LanguageServer):
    """Runs the project's program (a directory with `__main__.py`, or a file) in this process."""

    def __init__(self) -> None:
        super().__init__(program=lambda: None)

    def Run(self, request: Any, context: Any) -> Any:
        entry = _program_path(request)
        program_dir = entry if entry.is_dir() else entry.parent
        if request.pwd:
            os.chdir(request.pwd)
        sys.path.insert(0, str(program_dir))

        def program() -> None:
            runpy.run_path(str(entry), run_name="__main__")

        self.program = program
        return super().Run(request, context)  # type: ignore[no-untyped-call]

    def RunPlugin(self, request: Any, context: Any) -> Iterator[Any]:
        """Run a Python plugin (a directory with `__main__.py`) until it exits or the engine
        cancels the call; stream its standard output and error, then its exit code.

        Like Pulumi's own host: `python <program directory> <args>` in `request.pwd`, with the
        environment the engine passes, and the interpreter of the `virtualenv` runtime option
        when the plugin names one (relative to its directory); otherwise this host's own. A
        policy pack on this host's interpreter runs here instead (`_pack_in_this_process`).
        """
        directory = Path(request.info.program_directory or request.info.root_directory or ".")
        root = Path(request.info.root_directory or directory)
        options = json_format.MessageToDict(request.info.options)
        python, venv = plugin_interpreter(root, options)
        events: queue.Queue[tuple[str, bytes | int]] = queue.Queue()
        if _pack_in_this_process(root, venv):
            _start_pack_here(directory / "__main__.py", events)
            yield from _responses(events, context)
            return
        env = plugin_environment(list(request.env), venv)
        argv = [python, str(directory), *request.args]
        try:
            child = subprocess.Popen(
                argv,
                cwd=request.pwd or str(directory),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # It stays in this host's process group: when the engine stops the host (it
                # signals the whole group), the plugin stops with it.
            )
        except OSError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot run plugin: {exc}")
        assert child.stdout is not None and child.stderr is not None
        _running_plugins.add(child)
        # The engine cancels the call to stop the plugin (a policy pack serves until then).
        context.add_callback(lambda: _stop(child))
        readers = [
            threading.Thread(target=_pump, args=(stream, name, events), daemon=True)
            for stream, name in ((child.stdout, "stdout"), (child.stderr, "stderr"))
        ]
        for reader in readers:
            reader.start()

        def exit_code() -> None:
            for reader in readers:
                reader.join()
            events.put(("exit", child.wait()))

        threading.Thread(target=exit_code, daemon=True).start()
        try:
            yield from _responses(events, context)
        finally:
            _stop(child)
            _running_plugins.discard(child)


def _responses(events: queue.Queue[tuple[str, bytes | int]], context: Any) -> Iterator[Any]:
    """A plugin's output as the engine's responses, until its exit code or the call's end."""
    while True:
        try:
            kind, value = events.get(timeout=0.5)
        except queue.Empty:
            if not context.is_active():
                return
            continue
        if kind == "exit":
            assert isinstance(value, int)
            if context.is_active():  # nobody listens to a cancelled call
                # A plugin killed by a signal exits with -1, as Go reports it.
                yield language_pb2.RunPluginResponse(exitcode=value if value >= 0 else -1)
            return
        assert isinstance(value, bytes)
        if kind == "stdout":
            yield language_pb2.RunPluginResponse(stdout=value)
        else:
            yield language_pb2.RunPluginResponse(stderr=value)


def _pack_in_this_process(root: Path, venv: Path | None) -> bool:
    """A policy pack (`PulumiPolicy.yaml`) this host's interpreter can run, and no project and
    stack in this host's environment: given those, pulumi-policy reconfigures the Pulumi
    runtime on every check, which here is the program's runtime."""
    same_interpreter = venv is None or venv == Path(sys.prefix).resolve()
    program_settings = {"PULUMI_PROJECT", "PULUMI_STACK", "PULUMI_DRY_RUN"} <= os.environ.keys()
    return (root / "PulumiPolicy.yaml").is_file() and same_interpreter and not program_settings


def _start_pack_here(main: Path, events: queue.Queue[tuple[str, bytes | int]]) -> None:
    """Run a policy pack's `__main__.py` in a thread of this host. It prints its port and
    serves until the host stops, which the engine does right after cancelling the call: so a
    cancelled pack is left serving (nothing else connects to it) rather than stopped.

    The pack's code runs in a namespace of its own, not as `sys.modules["__main__"]`, and
    without `runpy`'s change of `sys.path[0]`: the program runs in this process at the same
    time. Only the pack's thread writes to the call's stream (`_ThreadOutput`)."""

    def serve() -> None:
        code: int = 0
        with _ThreadOutput.routed(events):
            try:
                source = compile(main.read_bytes(), str(main), "exec")
                exec(source, {"__name__": "__main__", "__file__": str(main)})
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # the engine shows it as it shows a child's error output
                sys.stderr.write(traceback.format_exc())
                code = 1
        events.put(("exit", code))

    threading.Thread(target=serve, name="policy-pack", daemon=True).start()


class _ThreadOutput:
    """`sys.stdout` or `sys.stderr` of a host that runs a plugin in a thread: what that thread
    writes goes to its call's stream (the engine reads the pack's port from it), what every
    other thread writes (the program's own output) to the host's stream as before."""

    def __init__(self, name: str, stream: Any) -> None:
        self._name = name
        self._stream = stream
        self.buffer = _ThreadBuffer(self)

    @classmethod
    @contextlib.contextmanager
    def routed(cls, events: queue.Queue[tuple[str, bytes | int]]) -> Iterator[None]:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), cls):
                setattr(sys, name, cls(name, getattr(sys, name)))
        _PACK_OUTPUTS[threading.get_ident()] = events
        try:
            yield
        finally:
            _PACK_OUTPUTS.pop(threading.get_ident(), None)

    def write_bytes(self, data: bytes) -> int:
        events = _PACK_OUTPUTS.get(threading.get_ident())
        if events is None:
            return int(self._stream.buffer.write(data))
        events.put((self._name, data))
        return len(data)

    def write(self, text: str) -> int:
        if threading.get_ident() not in _PACK_OUTPUTS:
            return int(self._stream.write(text))
        self.write_bytes(text.encode())
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ThreadBuffer:
    def __init__(self, output: _ThreadOutput) -> None:
        self._output = output

    def write(self, data: bytes) -> int:
        return self._output.write_bytes(data)

    def flush(self) -> None:
        self._output.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._output._stream.buffer, name)


def plugin_interpreter(root: Path, options: Mapping[str, Any]) -> tuple[str, Path | None]:
    """The Python that runs a plugin, and its virtual environment if it names one."""
    virtualenv = options.get("virtualenv")
    if isinstance(virtualenv, str) and virtualenv:
        venv = (root / virtualenv).resolve()
        python = venv / "bin" / "python"
        if python.exists():
            return str(python), venv
    return sys.executable, None


def plugin_environment(engine_env: list[str], venv: Path | None) -> dict[str, str]:
    """The engine's environment for the plugin (`KEY=value` entries; ours if it sends none)."""
    env = dict(os.environ)
    if engine_env:
        env = dict(entry.split("=", 1) for entry in engine_env if "=" in entry)
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
    # The engine reads the plugin's port from its first line of output: never hold it back.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(stream: IO[bytes], name: str, events: queue.Queue[tuple[str, bytes | int]]) -> None:
    """Forward a pipe's bytes as they come."""
    with contextlib.suppress(OSError):
        while data := os.read(stream.fileno(), _CHUNK):
            events.put((name, data))


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stop a plugin: SIGTERM, then SIGKILL if it lingers."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    try:
        child.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS), options=_GRPC_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(ProgramLanguageServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The engine reads the port from the first line of our standard output.
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:  # the engine interrupts its plugins when it is done with them
        server.stop(grace=None)
        for child in list(_running_plugins):
            _stop(child)
        sys.stdout.flush()
        sys.stderr.flush()
        # A program the engine stopped mid-run (a failed preview, a policy violation) leaves a
        # worker thread waiting on an engine that is gone: exit now rather than make the
        # engine wait for us and then kill us.
        os._exit(0)


if __name__ == "__main__":
    main()
