"""Faults that used to lose data or strand the site while reporting success, on the real engine:
each test sets up the fault the way a crash, a user or another stack would, then checks what a
user would check (the rows they wrote are still served, the other stack still answers)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sampleapp.versions import VERSIONS
from tests.helpers.commands import ROOT, Result, config_file, stack_dir
from tests.helpers.ports import free_port_block
from tests.helpers.site import Writer, titles, up_to
from zdd.environment import STATE_ROOT
from zdd.sqlite_files import content_digest, data_digest, files_folder

pytestmark = pytest.mark.engine

Make = Callable[[str], dict[str, Any]]


def write(url: str, title: str) -> int:
    response = httpx.post(f"{url}/api/articles", json={"title": title, "text": "x"}, timeout=10)
    return response.status_code


def resource_outputs(pulumi: Callable[..., Result], name: str, resource: str) -> dict[str, Any]:
    exported = pulumi("stack", "export", "-s", name).json()
    for entry in exported["deployment"]["resources"]:
        if entry["urn"].endswith(f"::{resource}"):
            outputs: dict[str, Any] = entry.get("outputs") or {}
            return outputs
    raise AssertionError(f"no resource {resource} in stack {name}")


def test_a_restore_point_that_was_never_taken_is_never_restored_and_abort_still_works(
    local_stack: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    real = [f"real-{i}" for i in range(3)]
    assert [write(public, title) for title in real] == [201, 201, 201]
    up_to(pulumi, name, targetVersion="v2", phase="clone")
    up_to(pulumi, name, phase="cutover")
    # Exactly what the driver writes before its deploy update; the update never ran (a driver
    # killed in between, or a deploy update that failed while taking the restore point).
    for key, value in (("phase", "deploy"), ("restorePoint", "rp-never-taken")):
        assert pulumi("config", "set", "-s", name, f"zdd:{key}", value).code == 0
    config = config_file(name)
    before = config.read_text()

    refused = zdd("rollback", "-s", name, "--with-database", "--json")
    assert refused.code == 3, refused.stderr
    error = refused.json()["error"]
    assert "no restore point was proven taken" in error and "zdd abort" in error
    assert config.read_text() == before

    aborted = zdd("abort", "-s", name, "--json")
    assert aborted.code == 0, aborted.stderr
    served = titles(public)
    assert set(real) <= set(served)
    status = zdd("status", "-s", name, "--json").json()
    assert (status["phase"], status["current_version"], status["traffic"]) == (
        "idle",
        "v1",
        "primary",
    )


def test_the_restore_point_records_what_the_primary_held_before_its_migration(
    local_stack: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    assert write(public, "before-the-deployment") == 201
    # Schema and rows of the primary before the deployment (nothing writes to it meanwhile).
    primary_before = content_digest(stack_dir(name) / "primary-g1.sqlite")
    empty = zdd("deploy", "-s", name, "--version", "v2", "--wait-for-approval", "--yes", "--json")
    assert empty.code == 0, empty.stderr
    proof = pulumi("stack", "output", "-s", name, "restore_point", "--json").json()
    backup = Path(resource_outputs(pulumi, name, "primary-db-restore-point")["backup_path"])
    # The proof names the file it was taken as, with the digest of a database that held the
    # row written before the deployment (never that of an empty or missing source).
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as restored:
        held = {row[0] for row in restored.execute("SELECT title FROM articles")}
        (schema,) = restored.execute("SELECT version_num FROM alembic_version").fetchone()
    assert "before-the-deployment" in held
    v1_schema = VERSIONS["v1"].schema_revision
    assert schema == v1_schema, "the restore point was taken after the migration had begun"
    assert content_digest(backup) == primary_before, "not what the primary held before"
    assert proof["restore_point"] and proof["taken_at"] > 0
    assert data_digest(backup) == proof["digest"], "the proof is not of the file kept"
    back = zdd("rollback", "-s", name, "--with-database", "--json")
    assert back.code == 0, back.stderr
    assert "before-the-deployment" in titles(public)


def test_a_read_write_abort_archives_every_write_the_clone_acknowledged(
    local_stack: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    up_to(pulumi, name, targetVersion="v2", mode="read-write", acceptDataLoss="true", phase="clone")
    up_to(pulumi, name, phase="cutover")
    with Writer(public) as writer:
        time.sleep(1)
        aborted = zdd("abort", "-s", name, "--json")
        time.sleep(0.5)
    assert aborted.code == 0, aborted.stderr
    report = aborted.json()["lost_writes"]
    with sqlite3.connect(f"file:{report['archive']}?mode=ro", uri=True) as archive:
        archived = {row[0] for row in archive.execute("SELECT title FROM articles")}
    on_primary = set(titles(public))
    # Every acknowledged write is on the primary (after the switch back) or in the archive of
    # the clone (before it): none is acknowledged and then dropped.
    missing = [t for t in writer.acknowledged if t not in on_primary and t not in archived]
    assert writer.acknowledged and missing == []
    reported = {row["title"] for row in report["tables"]["articles"]["added"]}
    assert reported == {t for t in writer.acknowledged if t in archived}


def pid_of(pulumi: Callable[..., Result], name: str, resource: str) -> int:
    return int(resource_outputs(pulumi, name, resource)["pid"])


def test_processes_of_others_are_never_signalled_and_taken_ports_are_refused(
    local_stack: Make, pulumi: Callable[..., Result]
) -> None:
    first = local_stack("v1")
    name = first["stack"]
    primary_url = pulumi("stack", "output", "-s", name, "primary_url").stdout.strip()
    port = int(primary_url.rsplit(":", 1)[1])
    # Someone else's process whose command line happens to hold the same `--port N`.
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "--port", str(port)]
    )
    try:
        # The primary dies with its supervisor; the next update starts it again, and must not
        # touch the decoy.
        os.killpg(pid_of(pulumi, name, "primary-process"), signal.SIGKILL)
        up_to(pulumi, name)
        assert decoy.poll() is None, "the update signalled a process that is not the stack's"
        assert titles(first["public_url"])

        # A second stack configured onto the first one's ports is refused; the first serves on,
        # and keeps its ports even while its primary is down.
        second = local_stack("v1")["stack"]
        base = int(pulumi("config", "get", "-s", name, "zdd:basePort").stdout.strip())
        assert pulumi("config", "set", "-s", second, "zdd:basePort", str(base)).code == 0
        clash = pulumi("up", "--yes", "--skip-preview", "-s", second)
        assert clash.code != 0 and "belongs to the stack in" in clash.stdout
        assert titles(first["public_url"])
        os.killpg(pid_of(pulumi, name, "primary-process"), signal.SIGKILL)
        held = pulumi("up", "--yes", "--skip-preview", "-s", second)
        assert held.code != 0 and "belongs to the stack in" in held.stdout
        up_to(pulumi, name)
        assert titles(first["public_url"])
        # A port another program listens on is refused too, and used once it is free (ports
        # nothing else holds, as tests run side by side).
        free = free_port_block()
        with socket.socket() as other_program:
            other_program.bind(("127.0.0.1", free + 1))
            other_program.listen()
            assert pulumi("config", "set", "-s", second, "zdd:basePort", str(free)).code == 0
            taken = pulumi("up", "--yes", "--skip-preview", "-s", second)
            assert taken.code != 0
            assert "is taken by a process that is not this stack's" in taken.stdout
        up_to(pulumi, second)
    finally:
        decoy.kill()
        decoy.wait()


def test_stack_folders_follow_stack_names_and_destroy_keeps_to_its_own(
    zdd: Callable[..., Result], pulumi: Callable[..., Result], tmp_path: Path
) -> None:
    state_root = ROOT / STATE_ROOT
    others = [
        state_root / "archive" / f"other-{uuid.uuid4().hex[:6]}" / "clone-1.sqlite",
        state_root / "locks" / f"other-{uuid.uuid4().hex[:6]}.lock",
    ]
    # Names that used to be the shared folders themselves.
    names = ("archive", "locks")
    try:
        for sentinel in others:
            sentinel.parent.mkdir(parents=True, exist_ok=True)
            sentinel.write_text("not the stack's")
        for name in names:
            made = zdd("init", "-s", name, "--version", "v1", "--json")
            assert made.code == 0, made.stderr
            # A folder the config names instead of the stack's own is refused, never used.
            elsewhere = tmp_path / name
            (elsewhere / "keep").parent.mkdir(parents=True)
            (elsewhere / "keep").write_text("keep")
            assert pulumi("config", "set", "-s", name, "zdd:stateDir", str(elsewhere)).code == 0
            refused = pulumi("up", "--yes", "--skip-preview", "-s", name)
            assert refused.code != 0 and "is not this stack's folder" in refused.stdout
            assert pulumi("config", "rm", "-s", name, "zdd:stateDir").code == 0
            # `zdd demo` does not replace a stack it did not make.
            demo = zdd("demo", "--stack", name, "--json")
            assert demo.code == 2 and "was not made by `zdd demo`" in demo.json()["error"]
            destroyed = zdd("destroy", "-s", name, "--yes")
            assert destroyed.code == 0, destroyed.stderr
            assert not stack_dir(name).exists()
            assert (elsewhere / "keep").exists()
        assert all(sentinel.exists() for sentinel in others)
    finally:
        # Pass or fail, nothing of this test is left in the checkout.
        for name in names:
            if config_file(name).exists():
                zdd("destroy", "-s", name, "--yes")
                pulumi("stack", "rm", "-s", name, "--force", "--yes")
                config_file(name).unlink(missing_ok=True)
        for sentinel in others:
            sentinel.unlink(missing_ok=True)
        if others[0].parent.exists():
            others[0].parent.rmdir()


def test_a_front_door_that_died_is_shown_and_brought_back(
    local_stack: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    paused = zdd("deploy", "-s", name, "--version", "v2", "--wait-for-approval", "--yes", "--json")
    assert paused.code == 0 and paused.json()["outcome"] == "awaiting-approval", paused.stderr
    # HAProxy and the supervisor that would start it again die together (the process group).
    os.killpg(pid_of(pulumi, name, "front-door-proxy"), signal.SIGKILL)

    status = zdd("status", "-s", name, "--json").json()
    assert status["components"]["front door"]["answering"] is False
    assert status["components"]["clone"]["answering"] is True

    done = zdd("complete", "-s", name, "--json")
    assert done.code == 0, done.stderr
    assert titles(public)
    after = zdd("status", "-s", name, "--json").json()
    assert after["phase"] == "idle" and after["current_version"] == "v2"
    assert all(c["answering"] for c in after["components"].values())


def test_a_restore_point_changed_since_it_was_taken_is_never_restored(
    local_stack: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name, public = stack["stack"], stack["public_url"]
    real = ["kept-1", "kept-2"]
    assert [write(public, title) for title in real] == [201, 201]
    paused = zdd("deploy", "-s", name, "--version", "v2", "--wait-for-approval", "--yes", "--json")
    assert paused.code == 0, paused.stderr
    backup = Path(resource_outputs(pulumi, name, "primary-db-restore-point")["backup_path"])
    config = config_file(name)
    before = config.read_text()

    # A file planted in its files folder: the files are part of what it proves.
    planted = files_folder(backup) / "planted.txt"
    planted.write_text("not the site's")
    refused = zdd("rollback", "-s", name, "--with-database", "--json")
    assert refused.code == 3, refused.stderr
    assert "no longer holds what it held when taken" in refused.json()["error"]
    planted.unlink()

    # Changed on disk after it was taken: still a valid database, one row short (its read-only
    # mark undone first, as a tool that rewrites the file would).
    with open(backup, "r+b") as handle:
        handle.seek(18)
        handle.write(b"\x01\x01")
    with sqlite3.connect(backup) as changed:
        changed.execute("DELETE FROM articles WHERE title = 'kept-1'")
    refused = zdd("rollback", "-s", name, "--with-database", "--json")
    assert refused.code == 3, refused.stderr
    error = refused.json()["error"]
    assert "no longer holds what it held when taken" in error and "--code-only" in error
    # Gone altogether.
    backup.unlink()
    gone = zdd("rollback", "-s", name, "--with-database", "--json")
    assert gone.code == 3 and "is gone" in gone.json()["error"], gone.stderr
    assert config.read_text() == before
    assert set(real) <= set(titles(public))

    # The rows are still the primary's: the deployment goes on with them.
    done = zdd("complete", "-s", name, "--json")
    assert done.code == 0, done.stderr
    assert set(real) <= set(titles(public))
    status = zdd("status", "-s", name, "--json").json()
    assert (status["phase"], status["current_version"]) == ("idle", "v2")
