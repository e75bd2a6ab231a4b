"""Long-running processes that outlive the Pulumi update that started them, and how they are
found again: by an owner id in their environment, unique to the stack and the resource.

A command-line pattern or a port says nothing about who started a process; the owner id is
inherited by a process's children and cannot match another stack's processes or another user's
(their environment is not ours to read), so only our own processes are ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# The environment variable that carries a process's owner id.
OWNER_VARIABLE = "ZDD_PROCESS_OWNER"
# What runs a supervised process (`python -m zdd.supervise -- ARGV...`).
SUPERVISOR_MODULE = "zdd.supervise"


class ProcessFailed(RuntimeError):
    pass


def owner_id(stack_dir: Path, resource: str) -> str:
    """The id of the processes of one resource of one stack (a stack's folder is unique)."""
    return f"{stack_dir.resolve()}#{resource}"


def start_detached(
    argv: list[str],
    log_path: Path,
    owner: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    supervised: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session with output to `log_path`, marked as `owner`'s; with
    `supervised`, under `SUPERVISOR_MODULE`, which starts it again if it dies.

    The command provider of an update waits for its children's output streams to close;
    a process with no pipe to us and its own session lets the update finish while it runs on.
    """
    if supervised:
        argv = [sys.executable, "-m", SUPERVISOR_MODULE, "--", *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {}), OWNER_VARIABLE: owner},
            cwd=cwd,
            close_fds=True,
        )
    return process


def _owner_of(pid: int) -> str | None:
    """The owner id in a live process's environment, if it is one of ours."""
    try:
        if Path(f"/proc/{pid}").stat().st_uid != os.getuid():
            return None
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, IndexError):
        return None
    if state == "Z":
        return None
    prefix = f"{OWNER_VARIABLE}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry.removeprefix(prefix).decode(errors="replace")
    return None


def is_running(pid: float | None, owner: str) -> bool:
    """True when `pid` is alive and is still `owner`'s (not a reused pid)."""
    return bool(pid) and _owner_of(int(pid or 0)) == owner  # the engine hands back floats


def _all_pids() -> Iterator[int]:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            yield int(entry.name)


def find_owned(owner: str) -> list[int]:
    """Pids of the running processes of `owner` (its children included)."""
    return [pid for pid in _all_pids() if _owner_of(pid) == owner]


def find_owned_under(stack_dir: Path) -> list[int]:
    """Pids of every running process of the stack whose folder is `stack_dir`."""
    prefix = f"{stack_dir.resolve()}#"
    return [pid for pid in _all_pids() if (_owner_of(pid) or "").startswith(prefix)]


def find_by_command_line(text: str) -> list[int]:
    """Pids of our user's running processes whose command line holds `text` (for processes we
    did not start ourselves, such as the engine's plugins)."""
    found = []
    for pid in _all_pids():
        try:
            if Path(f"/proc/{pid}").stat().st_uid != os.getuid():
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(pid)
    return found


def stop(pid: float | None, owner: str, timeout: float = 15.0) -> None:
    """SIGTERM (the servers finish in-flight requests), then SIGKILL after `timeout`."""
    if not pid or not is_running(pid, owner):
        return
    terminate(int(pid), lambda: is_running(pid, owner), timeout)


def _exists(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def terminate(pid: int, alive: Callable[[], bool] | None = None, timeout: float = 15.0) -> None:
    """SIGTERM `pid`, then SIGKILL once `timeout` passed while `alive()` (by default: the pid
    exists) still says so."""
    alive = alive or (lambda: _exists(pid))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _started(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def stop_owned(owner: str, timeout: float = 15.0) -> None:
    """Stop every process of `owner`: one started by an update that was killed before the
    engine could record it would otherwise hold its port, or its database, forever. The oldest
    goes first: a supervisor stops its process itself and must not restart it meanwhile."""
    for pid in sorted(find_owned(owner), key=_started):
        stop(pid, owner, timeout)


def run_exclusive(
    argv: list[str],
    owner: str,
    lock_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to its end in a process group of its own, marked as `owner`'s, holding the
    lock at `lock_path` for as long as it (or anything it started) runs.

    The lock is inherited by the child, so a migration whose update was killed keeps it: a
    resumed update first stops the leftover (`stop_owned`) and never runs a second one at the
    same time on the same database.
    """
    stop_owned(owner, timeout=5)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProcessFailed(
                        f"{lock_path} is held by another process after 30s"
                    ) from None
                time.sleep(0.1)
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {}), OWNER_VARIABLE: owner},
            cwd=cwd,
            pass_fds=(lock.fileno(),),
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise ProcessFailed(
                f"{argv[0]} did not finish within {timeout:.0f}s:\n{output}"
            ) from None
        return subprocess.CompletedProcess(argv, process.returncode, output, "")


def claim_port(registry: Path, port: int, holder: Path) -> None:
    """Record that `port` belongs to the stack whose folder is `holder`; refuse a port another
    stack holds, even while that stack's processes are down (its folder still exists)."""
    registry.mkdir(parents=True, exist_ok=True)
    entry = registry / str(port)
    try:
        owner = Path(entry.read_text().strip())
    except FileNotFoundError:
        owner = None
    if owner is not None and owner != holder.resolve() and owner.exists():
        raise ProcessFailed(
            f"port {port} belongs to the stack in {owner}; give this stack other ports "
            "(zdd:basePort), or destroy that stack"
        )
    partial = registry / f".{port}.{os.getpid()}"
    partial.write_text(str(holder.resolve()))
    os.replace(partial, entry)


def release_port(registry: Path, port: int, holder: Path) -> None:
    entry = registry / str(port)
    with contextlib.suppress(FileNotFoundError):
        if Path(entry.read_text().strip()) == holder.resolve():
            entry.unlink()


# Where servers of ours listen: from here up to the first port the kernel gives outgoing
# connections. A server on a port of that range can find it taken by some client's connection
# between the check that it was free and the server's start.
SERVER_PORTS_FROM = 10000


def server_ports(step: int = 1) -> range:
    """The ports a server of ours may listen on, below the kernel's ephemeral range."""
    try:
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        first_ephemeral = int(ephemeral[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default
    return range(SERVER_PORTS_FROM, max(first_ephemeral - 16, SERVER_PORTS_FROM + 16), step)


def free_port() -> int:
    """A port no one listens on now, for a server of ours."""
    candidates = server_ports()
    for _ in range(200):
        port = random.choice(candidates)
        if not port_in_use(port):
            return port
    raise ProcessFailed(f"no free port among {candidates.start}-{candidates.stop - 1}")


def port_in_use(port: int, grace: float = 0.0) -> bool:
    """Whether something listens on `port` (connections of a server that just stopped, still
    in TIME_WAIT, do not count: servers bind with SO_REUSEADDR, and so does this check).

    With `grace`, a port that frees itself within that many seconds is not in use: a
    multi-threaded server shows as a zombie before its last thread has closed its sockets.
    """
    deadline = time.monotonic() + grace
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return False
            except OSError:
                if time.monotonic() >= deadline:
                    return True
        time.sleep(0.05)


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
