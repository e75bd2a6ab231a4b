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
`runtime: python`), started for `pulumi up/preview --policy-pack policies`. The pack runs in its
own process, `python <pack directory> <engine address>`, whose output and exit code stream back
to the engine; the engine stops it by cancelling the call.

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
        when the plugin names one (relative to its directory); otherwise this host's own.
        """
        directory = Path(request.info.program_directory or request.info.root_directory or ".")
        root = Path(request.info.root_directory or directory)
        options = json_format.MessageToDict(request.info.options)
        python, venv = plugin_interpreter(root, options)
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
        chunks: queue.Queue[tuple[str, bytes]] = queue.Queue()
        readers = [
            threading.Thread(target=_pump, args=(stream, name, chunks), daemon=True)
            for stream, name in ((child.stdout, "stdout"), (child.stderr, "stderr"))
        ]
        for reader in readers:
            reader.start()
        open_streams = len(readers)
        try:
            while open_streams:
                try:
                    name, data = chunks.get(timeout=0.5)
                except queue.Empty:
                    if not context.is_active():
                        return
                    continue
                if not data:
                    open_streams -= 1
                elif name == "stdout":
                    yield language_pb2.RunPluginResponse(stdout=data)
                else:
                    yield language_pb2.RunPluginResponse(stderr=data)
            code = child.wait()
            if context.is_active():  # nobody listens to a cancelled call
                # A plugin killed by a signal exits with -1, as Go reports it.
                yield language_pb2.RunPluginResponse(exitcode=code if code >= 0 else -1)
        finally:
            _stop(child)
            _running_plugins.discard(child)


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


def _pump(stream: IO[bytes], name: str, chunks: queue.Queue[tuple[str, bytes]]) -> None:
    """Forward a pipe's bytes as they come; an empty chunk says the pipe closed."""
    try:
        while data := os.read(stream.fileno(), _CHUNK):
            chunks.put((name, data))
    except OSError:
        pass
    finally:
        chunks.put((name, b""))


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
