"""A read-write clone on PostgreSQL, on the real engine with the stack's own cluster: its own
cluster takes writes the live primary never sees, and when it goes (idle or abort) its database
is archived as a dump that restores, and exactly the rows it took are reported; without the
acknowledgement it is refused and nothing changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.commands import ROOT, Result, config_file, stack_dir
from tests.helpers.driver import read_write_deployment, snapshot
from tests.helpers.postgres import server_of
from tests.helpers.site import Writer, titles, up_to
from zdd import postgres
from zdd.environment import STATE_ROOT, archive_dir
from zdd.sqlite_files import baseline_path

pytestmark = [
    pytest.mark.engine(minutes=2),
    pytest.mark.skipif(postgres.bin_dir() is None, reason="PostgreSQL is not installed"),
]

PRIMARY = postgres.database_name("primary", 1)


def archived_titles(server: postgres.Server, dump: Path) -> set[str]:
    """The article titles a dump holds, read back by restoring it into a scratch database of
    the stack's cluster."""
    scratch = "test_archive_check"
    postgres.restore_dump(server, dump, scratch)
    try:
        with server.admin(scratch) as conn:
            return {str(title) for (title,) in conn.execute("SELECT title FROM articles")}
    finally:
        postgres.drop_database(server, scratch)


def primary_titles(server: postgres.Server) -> set[str]:
    """The titles in the live primary database, read there, not through any site."""
    with server.admin(PRIMARY) as conn:
        return {str(title) for (title,) in conn.execute("SELECT title FROM articles")}


def resources(pulumi: Callable[..., Result], name: str) -> list[tuple[str, Any]]:
    """The stack's resources and what each holds, as its state records them."""
    exported = pulumi("stack", "export", "--stack", name).json()
    return sorted((r["urn"], r.get("outputs")) for r in exported["deployment"]["resources"])


def test_a_read_write_deployment_on_postgresql_reports_and_archives_exactly_what_the_clone_took(
    pg_v1: dict[str, Any],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    name, public = pg_v1["stack"], pg_v1["public_url"]
    lost, taken = read_write_deployment(zdd, name)
    # The live primary never got a row the clone took.
    server = server_of(pulumi, name)
    assert not taken & primary_titles(server)
    assert not taken & set(titles(public))
    # The archive and its baseline are dumps that restore: the clone's rows are the difference.
    archive = Path(lost["archive"])
    assert archive.parent == archive_dir(ROOT / STATE_ROOT, name)
    assert archived_titles(server, archive) - archived_titles(server, baseline_path(archive)) == (
        taken
    )
    # The clone's cluster went with the clone.
    assert not postgres.clone_cluster_dir(stack_dir(name)).exists()


def test_a_read_write_abort_on_postgresql_archives_every_write_the_clone_acknowledged(
    pg_v1: dict[str, Any],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    name, public = pg_v1["stack"], pg_v1["public_url"]
    up_to(pulumi, name, targetVersion="v2", mode="read-write", acceptDataLoss="true", phase="clone")
    up_to(pulumi, name, phase="cutover")
    server = server_of(pulumi, name)
    with Writer(public) as writer:
        time.sleep(1)
        # While the clone serves, what it acknowledged is in its cluster only.
        assert writer.acknowledged and not set(writer.acknowledged) & primary_titles(server)
        aborted = zdd("abort", "--stack", name, "--json")
        time.sleep(0.5)
    assert aborted.code == 0, aborted.stderr
    report = aborted.json()["lost_writes"]
    archived = archived_titles(server, Path(report["archive"]))
    on_primary = set(titles(public))
    # Every acknowledged write is on the primary (after the switch back) or in the archive of
    # the clone (before it): none is acknowledged and then dropped.
    missing = [t for t in writer.acknowledged if t not in on_primary and t not in archived]
    assert missing == []
    reported = {row["title"] for row in report["tables"]["articles"]["added"]}
    assert reported == {t for t in writer.acknowledged if t in archived}
    assert reported and not reported & on_primary


def test_a_read_write_clone_on_postgresql_without_the_acknowledgement_is_refused(
    pg_v1: dict[str, Any],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    name = pg_v1["stack"]
    before = snapshot(pulumi, name)
    refused = zdd("deploy", "--stack", name, "--version", "v2", "--mode", "read-write", "--json")
    assert refused.code == 2, refused.stderr
    assert "--accept-data-loss" in refused.json()["error"]
    assert snapshot(pulumi, name) == before

    resources_before = resources(pulumi, name)
    # By hand, with an acknowledgement kept secret: the pack refuses the clone's site and its
    # writable cluster alike, before anything is made.
    for key, value in (("targetVersion", "v2"), ("phase", "clone"), ("mode", "read-write")):
        assert pulumi("config", "set", "--stack", name, f"zdd:{key}", value).code == 0
    secret = ("config", "set", "--secret", "--stack", name, "zdd:acceptDataLoss", "true")
    assert pulumi(*secret).code == 0
    up = pulumi("up", "--yes", "--stack", name, "--policy-pack", "policies")
    assert up.code != 0
    assert "clone-db-cluster: its cluster is ReadWrite" in up.stdout, up.stdout
    assert "clone-process: database_mode is ReadWrite" in up.stdout, up.stdout
    assert resources(pulumi, name) == resources_before
    assert not postgres.clone_cluster_dir(stack_dir(name)).exists()
    # Back to the config the stack had, so it can be destroyed as it is.
    config_file(name).write_text(before[1])
