"""Process identity and migrations: only a stack's own processes are found and signalled, and
a migration left running by a killed update is stopped before another one may start."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.commands import ROOT
from tests.helpers.waiting import wait_for
from zdd import processes


@pytest.fixture
def owner() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}#resource"
    yield name
    processes.stop_owned(name, timeout=2)


def sleeper(owner: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "import time; time.sleep(300)", "--port", "8000"]
    return processes.start_detached(argv, log, owner)


def test_only_the_owners_processes_are_found_and_stopped(owner: str, tmp_path: Path) -> None:
    other_owner = f"{owner}-other"
    mine = sleeper(owner, tmp_path / "mine.log")
    theirs = sleeper(other_owner, tmp_path / "theirs.log")
    # Same command line, no owner: what a pattern on `--port 800` used to match.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "--port", "8000"]
    )
    try:
        assert processes.find_owned(owner) == [mine.pid]
        assert processes.is_running(mine.pid, owner)
        assert not processes.is_running(theirs.pid, owner)
        assert not processes.is_running(stranger.pid, owner)
        processes.stop_owned(owner, timeout=5)
        mine.wait(timeout=10)
        assert theirs.poll() is None and stranger.poll() is None
    finally:
        processes.stop_owned(other_owner, timeout=2)
        stranger.kill()
        for process in (mine, theirs, stranger):
            process.wait(timeout=10)


LEFT_RUNNING = """
import sys
from pathlib import Path
from zdd.processes import run_exclusive
run_exclusive(["sleep", "300"], sys.argv[1], Path(sys.argv[2]))
"""


def test_a_migration_left_by_a_killed_update_is_stopped_before_the_next_one(
    owner: str, tmp_path: Path
) -> None:
    lock = tmp_path / "site.sqlite.migrate.lock"
    update = subprocess.Popen([sys.executable, "-c", LEFT_RUNNING, owner, str(lock)], cwd=ROOT)
    wait_for(lambda: processes.find_owned(owner))
    (migration,) = processes.find_owned(owner)
    os.kill(update.pid, signal.SIGKILL)  # the update dies; its migration runs on
    update.wait(timeout=10)
    assert processes.is_running(migration, owner)
    with open(lock, "a") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and still holds the database

    second = processes.run_exclusive([sys.executable, "-c", "print('migrated')"], owner, lock)
    assert second.returncode == 0 and "migrated" in second.stdout
    assert not processes.is_running(migration, owner)


def test_a_migration_runs_in_a_process_group_of_its_own(owner: str, tmp_path: Path) -> None:
    script = "import os; print(os.getpgid(0) == os.getpid())"
    done = processes.run_exclusive([sys.executable, "-c", script], owner, tmp_path / "lock")
    assert done.stdout.strip() == "True"


SERVER = "import time, sys; print('up', flush=True); time.sleep(300)"


def test_a_supervised_process_that_dies_is_started_again(owner: str, tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    argv = [sys.executable, "-c", SERVER]
    supervisor = processes.start_detached(argv, log, owner, supervised=True)
    try:
        wait_for(lambda: len(processes.find_owned(owner)) == 2)
        (server,) = set(processes.find_owned(owner)) - {supervisor.pid}
        os.kill(server, signal.SIGKILL)  # the site crashes
        wait_for(lambda: len(set(processes.find_owned(owner)) - {supervisor.pid, server}) == 1)
        assert "starting it again" in log.read_text()
    finally:
        processes.stop_owned(owner, timeout=5)
    assert supervisor.wait(timeout=10) is not None
    assert processes.find_owned(owner) == []  # stopped, not started again


def test_a_release_that_keeps_dying_is_given_up_with_its_exit_code(
    owner: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = processes.start_detached(argv, tmp_path / "site.log", owner, supervised=True)
    assert supervisor.wait(timeout=20) == 3
    assert "just after starting" in (tmp_path / "site.log").read_text()


def test_servers_get_ports_below_the_range_of_outgoing_connections() -> None:
    # A client's connection can take any port of the ephemeral range at any moment.
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {processes.free_port() for _ in range(50)}
    assert all(processes.SERVER_PORTS_FROM <= port < first_ephemeral for port in ports)
    assert len(ports) > 1
