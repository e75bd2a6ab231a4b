"""A Python language host for the Pulumi engine (`pulumi-language-python`).

Why it exists: Pulumi's own language host is a Go module
(`github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3`) that the module proxy
reachable from our build machines does not serve, so `make setup` cannot build it. The engine
only needs a process that serves the `LanguageRuntime` gRPC service and prints its port; the
Pulumi SDK already ships that service for inline Automation API programs
(`pulumi.automation._server.LanguageServer`). This module reuses it and adds the one thing an
inline server does not do: load the program named by `Pulumi.yaml`'s `main`.

Where a real Pulumi installation is present, the engine finds its bundled host beside the CLI
first and this one is never started.
"""

from __future__ import annotations

import os
import runpy
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2_grpc

# The engine's plugin protocol allows large messages (resource state can be big).
_GRPC_OPTIONS = [("grpc.max_receive_message_length", 400 * 1024 * 1024)]


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


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_OPTIONS)
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


if __name__ == "__main__":
    main()
