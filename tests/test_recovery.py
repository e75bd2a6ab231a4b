"""Recoveries on the local target, on the real engine, under the load probe: roll forward,
roll back code only, roll back code and database, failed gates, previews, and a driver that
is killed at each phase and resumed."""

from __future__ import annotations

import glob
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sampleapp.app import IDENTITY_PATH
from sampleapp.versions import VERSIONS
from tests.helpers.commands import PROBE_RATE, ROOT, Result, stack_dir
from tests.helpers.driver import Driver, paused_for_approval, snapshot, update_locks
from tests.helpers.waiting import wait_for
from zdd.probe import LoadProbe, ProbeTarget
from zdd.sqlite_files import content_digest, data_digest

pytestmark = pytest.mark.engine(minutes=2)

Make = Callable[[str], dict[str, Any]]
SAMPLE_PROBE = ProbeTarget.of_file(ROOT / "apps/sample/app.yaml")


@pytest.fixture
def site(local_stack: Make, pulumi: Callable[..., Result]) -> Callable[[str], dict[str, Any]]:
    """A local stack at a version, with short gate timeouts (a failing app fails fast)."""

    def make(version: str) -> dict[str, Any]:
        stack = local_stack(version)
        set_timeout = pulumi("config", "set", "-s", stack["stack"], "zdd:gateTimeoutSeconds", "6")
        assert set_timeout.code == 0
        return stack

    return make


def serving(url: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{url}{IDENTITY_PATH}", timeout=10).json()
    return found


def assert_clean_finish(report: dict[str, Any], stack: dict[str, Any], version: str) -> None:
    assert report["outcome"] == "succeeded", report
    probe = report["probe"]
    assert probe["failed"] == 0, probe["failures"]
    assert probe["writes_lost"] == 0
    assert serving(stack["public_url"]) == {
        "version": version,
        "instance": "primary",
        "database_mode": "ReadWrite",
    }
    state_dir = stack_dir(stack["stack"])
    assert not list(state_dir.glob("clone*.sqlite")), "the clone's database is left"
    assert not any(
        "--instance clone"
        in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and Path(f"/proc/{pid}/cmdline").exists()
        and str(state_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ), "the clone's process is left"


def test_roll_forward_after_an_unhealthy_release(site: Make, zdd: Callable[..., Result]) -> None:
    stack = site("v1")
    name = stack["stack"]
    failed = zdd("deploy", "-s", name, "--version", "v3-unhealthy", "--probe", "--yes", "--json")
    assert failed.code == 4, failed.stderr
    report = failed.json()
    assert "rollforward" in report["error"] and "--code-only" in report["error"]
    # The unhealthy primary never got public traffic; the clone kept it, without failures.
    assert "v3-unhealthy" not in report["probe"]["versions_served"]
    assert report["probe"]["failed"] == 0
    assert zdd("status", "-s", name, "--json").json()["traffic"] == "clone"

    forward = zdd("rollforward", "-s", name, "--version", "v2", "--probe", "--json")
    assert forward.code == 0, forward.stderr
    assert "v3-unhealthy" not in forward.json()["probe"]["versions_served"]
    assert_clean_finish(forward.json(), stack, "v2")


def test_roll_back_code_only(site: Make, zdd: Callable[..., Result]) -> None:
    stack = site("v2")
    name = stack["stack"]
    public = stack["public_url"]
    written = httpx.post(f"{public}/api/articles", json={"title": "kept", "text": "x"})
    assert written.status_code == 201
    primary = stack_dir(name) / "primary-g1.sqlite"
    inode = primary.stat().st_ino
    assert zdd("deploy", "-s", name, "--version", "v3-unhealthy", "--yes", "--json").code == 4
    back = zdd("rollback", "-s", name, "--code-only", "--probe", "--json")
    assert back.code == 0, back.stderr
    assert_clean_finish(back.json(), stack, "v2")
    # Code only: the database was not replaced. The primary still runs on the very file it
    # had, no new generation was made, and the file keeps its rows and the schema the failed
    # release migrated it to.
    assert sorted(stack_dir(name).glob("primary-g*.sqlite")) == [primary]
    assert primary.stat().st_ino == inode
    with sqlite3.connect(f"file:{primary}?mode=ro", uri=True) as database:
        assert "kept" in {row[0] for row in database.execute("SELECT title FROM articles")}
        (schema,) = database.execute("SELECT version_num FROM alembic_version").fetchone()
    assert schema == VERSIONS["v3-unhealthy"].schema_revision
    assert "kept" in httpx.get(f"{public}/api/articles/titles", timeout=10).json()
    assert not any(c["resource"] == "primary-db-file" for c in back.json()["changed"])


def test_roll_back_code_and_database_to_the_restore_point(
    site: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = site("v1")
    name = stack["stack"]
    public = stack["public_url"]
    before_cutover = httpx.post(f"{public}/api/articles", json={"title": "kept", "text": "x"})
    assert before_cutover.status_code == 201
    paused_for_approval(zdd, name, "v2")
    status = zdd("status", "-s", name, "--json").json()
    assert status["state"] == "awaiting-approval" and status["traffic"] == "clone"
    # What the deploy update recorded when it took the restore point, before any migration.
    taken = pulumi("stack", "output", "-s", name, "restore_point", "--json").json()

    back = zdd(
        "rollback", "-s", name, "--with-database", "--wait-for-approval", "--probe", "--json"
    )
    assert back.code == 0, back.stderr
    state_dir = stack_dir(name)
    (restore_point,) = glob.glob(str(state_dir / "restore-*.sqlite"))
    with sqlite3.connect(f"file:{restore_point}?mode=ro", uri=True) as point:
        assert "kept" in {row[0] for row in point.execute("SELECT title FROM articles")}
    # The new database generation holds exactly what the primary held when the restore point
    # was taken, as that update recorded it (not merely what the backup file holds now).
    assert data_digest(Path(restore_point)) == taken["digest"]
    assert content_digest(state_dir / "primary-g2.sqlite") == content_digest(Path(restore_point))

    done = zdd("complete", "-s", name, "--probe", "--json")
    assert done.code == 0, done.stderr
    assert_clean_finish(done.json(), stack, "v1")
    titles = httpx.get(f"{public}/api/articles/titles").json()
    assert "kept" in titles  # acknowledged before cutover, so in the restore point
    history = zdd("history", "-s", name, "--json").json()["deployments"]
    assert history[0]["actions"] == ["deploy", "rollback-with-database", "complete"]
    assert history[0]["outcome"] == "rolled-back" and history[0]["rolled_back_to"] == "v1"
    assert history[0]["to_version"] == "v2"  # what it attempted, not where it ended
    # Both probes that watched it, the paused rollback's and the completion's, are kept.
    probes, kept = [back.json()["probe"], done.json()["probe"]], history[0]["probe"]
    assert kept["commands"] == ["rollback-with-database", "complete"]
    for figure in ("requests", "writes_held", "writes_refused", "writes_lost"):
        assert kept[figure] == sum(p[figure] for p in probes), figure
    assert kept["longest_hold_seconds"] == max(p["longest_hold_seconds"] for p in probes)


def test_a_failed_migration_leaves_the_stack_recoverable(
    site: Make, zdd: Callable[..., Result]
) -> None:
    stack = site("v2")
    name = stack["stack"]
    failed = zdd("deploy", "-s", name, "--version", "v3-bad-migration", "--yes", "--json")
    assert failed.code == 5
    assert "no such column: headline" in failed.json()["error"]  # the migration's own output
    assert serving(stack["public_url"])["instance"] == "clone"
    back = zdd("rollback", "-s", name, "--with-database", "--probe", "--json")
    assert back.code == 0, back.stderr
    assert_clean_finish(back.json(), stack, "v2")


def test_previews_change_nothing_and_name_what_the_action_changes(
    site: Make, zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    stack = site("v1")
    name = stack["stack"]
    before = snapshot(pulumi, name)
    shown = zdd("deploy", "-s", name, "--version", "v2", "--preview", "--json")
    assert shown.code == 0, shown.stderr
    assert snapshot(pulumi, name) == before
    would = {c["resource"] for c in shown.json()["would_change"]}
    assert {"clone-db-file", "clone-process", "front-door-proxy"} <= would

    assert zdd("deploy", "-s", name, "--version", "v2", "--wait-for-approval", "--yes").code == 0
    for args in (["rollback", "--with-database"], ["rollback", "--code-only"], ["abort"]):
        before = snapshot(pulumi, name)
        previewed = zdd(*args, "-s", name, "--preview", "--json")
        assert snapshot(pulumi, name) == before, args
        # A rollback's preview succeeds; an abort is refused: the primary was already changed.
        assert previewed.code == (3 if args == ["abort"] else 0), (args, previewed.stderr)
    before = snapshot(pulumi, name)
    shown = zdd("rollback", "-s", name, "--with-database", "--preview", "--json")
    assert shown.code == 0, shown.stderr
    assert snapshot(pulumi, name) == before
    would = {c["resource"] for c in shown.json()["would_change"]}
    done = zdd("rollback", "-s", name, "--with-database", "--wait-for-approval", "--json")
    assert done.code == 0, done.stderr
    really = {c["resource"] for c in done.json()["changed"] if c["phase"] == "deploy"}
    assert really and really <= would
    assert zdd("complete", "-s", name).code == 0


@pytest.mark.parametrize("phase", ["clone", "cutover", "deploy", "return", "idle"])
def test_killed_driver_resumes_without_a_failed_request(
    site: Make, zdd: Callable[..., Result], engine_env: dict[str, str], phase: str
) -> None:
    stack = site("v1")
    name = stack["stack"]
    probe = LoadProbe(stack["public_url"], SAMPLE_PROBE, rate=PROBE_RATE)
    probe.start()
    # Without approval `cutover` and `deploy` are no states of their own: `clone` goes
    # straight to `return`.
    approval = ["--wait-for-approval"] if phase in ("cutover", "deploy") else []
    driver = Driver(engine_env, "deploy", "-s", name, "--version", "v2", "--yes", *approval)
    driver.reach(f"{phase}: pulumi up")
    # In the middle of the phase's update: its Pulumi CLI holds the stack's lock.
    wait_for(lambda: update_locks(engine_env, name), 60, interval=0.01, what="for the update")
    driver.kill()
    assert driver.process.returncode == -signal.SIGKILL
    resumed = zdd("resume", "-s", name, "--json")
    assert resumed.code == 0, resumed.stderr
    if approval:
        assert resumed.json()["outcome"] == "awaiting-approval"
        completed = zdd("complete", "-s", name, "--json")
        assert completed.code == 0, completed.stderr
    probe.stop()
    report = probe.report()
    assert report.requests > 0, "the probe made no request"
    assert report.failed == 0, report.failures
    assert report.writes_lost == 0
    status = zdd("status", "-s", name, "--json").json()
    assert status["state"] == "idle" and status["current_version"] == "v2"
    assert serving(stack["public_url"])["version"] == "v2"


def test_a_second_driver_is_refused(
    site: Make, zdd: Callable[..., Result], engine_env: dict[str, str]
) -> None:
    name = site("v1")["stack"]
    first = Driver(engine_env, "deploy", "-s", name, "--version", "v2", "--yes")
    first.reach("clone: pulumi up")
    second = zdd("deploy", "-s", name, "--version", "v2", "--yes", "--json")
    assert second.code == 6
    assert "another zdd driver" in second.json()["error"]
    assert first.finish() == 0


# A file that appears once the update has started changing resources in that phase.
# The update that makes the clone's copy, and the one that takes the restore point (without
# approval, `return` straight from `clone`, after its switch to the clone), by the file each
# starts to write.
STARTED_IN = {"clone": "clone-g*.sqlite*", "return": "restore-*.sqlite*"}


@pytest.mark.parametrize("phase", sorted(STARTED_IN))
def test_resume_after_the_whole_update_was_killed(
    site: Make, zdd: Callable[..., Result], engine_env: dict[str, str], phase: str
) -> None:
    """The driver and its Pulumi CLI die together, in the middle of a resource operation: the
    update's lock and pending operations are left behind, and `zdd resume` clears them and
    finishes the deployment."""
    stack = site("v1")
    name = stack["stack"]
    probe = LoadProbe(stack["public_url"], SAMPLE_PROBE, rate=PROBE_RATE)
    probe.start()
    driver = Driver(engine_env, "deploy", "-s", name, "--version", "v2", "--yes", own_group=True)
    driver.reach(f"{phase}: pulumi up")
    # Kill once the CLI holds the stack's lock and a resource operation has begun.
    wait_for(
        lambda: update_locks(engine_env, name) and list(stack_dir(name).glob(STARTED_IN[phase])),
        60,
        interval=0.01,
        what="for the update to get to its resources",
    )
    driver.kill()
    resumed = zdd("resume", "-s", name, "--json")
    probe.stop()
    assert resumed.code == 0, resumed.stderr
    assert "clearing the lock of an update whose process is gone" in resumed.stderr
    report = probe.report()
    assert report.failed == 0, report.failures
    assert report.writes_lost == 0
    assert zdd("status", "-s", name, "--json").json()["current_version"] == "v2"
    assert serving(stack["public_url"])["version"] == "v2"
