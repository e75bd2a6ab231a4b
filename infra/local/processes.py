"""Long-running processes that outlive the Pulumi update that started them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class ProcessFailed(RuntimeError):
    pass


def start_detached(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session with output to `log_path`.

    The command provider of an update waits for its children's output streams to close;
    a process with no pipe to us and its own session lets the update finish while it runs on.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            close_fds=True,
        )
    return process


def is_running(pid: float | None, marker: str) -> bool:
    """True when `pid` is alive and is still our process (its command line holds `marker`)."""
    if not pid:
        return False
    pid = int(pid)  # the engine hands numbers back as floats
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def stop(pid: float | None, marker: str, timeout: float = 15.0) -> None:
    """SIGTERM (the servers finish in-flight requests), then SIGKILL after `timeout`."""
    if not pid or not is_running(pid, marker):
        return
    pid = int(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid, marker):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def find_matching(marker: str) -> list[int]:
    """Pids of the running processes (other than this one) whose command line holds `marker`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != os.getpid()
        and is_running(int(entry.name), marker)
    ]


def stop_matching(marker: str) -> None:
    """Stop every process whose command line holds `marker`: one started by an update that was
    killed before the engine could record it would otherwise hold the port forever."""
    for pid in find_matching(marker):
        stop(pid, marker)


def wait_listening(
    process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessFailed(
                f"process exited ({process.returncode}) during start; last log lines:\n"
                f"{tail(log_path)}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ProcessFailed(f"nothing listens on port {port} after {timeout:.0f}s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
