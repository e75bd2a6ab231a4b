"""Rehearsals and the compatible path on PostgreSQL, on the real engine with the stack's own
cluster: a rehearsal migrates a scratch cluster of its own and never the live primary, a failed
migration is reported with its output, a killed rehearsal's server is stopped by the next one
and by `zdd destroy`, and the compatible path ships under load with every write kept (or, after
a rollback with database, reported)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers.commands import Result, killed_in, processes_naming, stack_dir
from tests.helpers.driver import paused_for_approval
from tests.helpers.postgres import primary_content, server_of
from zdd import postgres
from zdd.processes import find_owned
from zdd.processes import owner_id as owner_of
from zdd.rehearsal import COPY_OWNER, MIGRATION_OWNER, SCRATCH, SITE_OWNER

pytestmark = [
    pytest.mark.engine(minutes=2),
    pytest.mark.skipif(postgres.bin_dir() is None, reason="PostgreSQL is not installed"),
]

PRIMARY = postgres.database_name("primary", 1)
Make = Callable[[str], dict[str, Any]]


def _no_rehearsal_left(name: str) -> None:
    scratch = stack_dir(name) / SCRATCH
    assert not scratch.exists()
    assert processes_naming(scratch) == [], "the rehearsal's scratch server still runs"
    for resource in (SITE_OWNER, MIGRATION_OWNER, COPY_OWNER):
        assert find_owned(owner_of(stack_dir(name), resource)) == []


def _write(public: str, title: str) -> None:
    answer = httpx.post(f"{public}/api/articles", json={"title": title, "text": "x"}, timeout=30)
    assert answer.status_code == 201, answer.text


def test_a_rehearsal_migrates_its_own_copy_and_leaves_the_live_primary_as_it_was(
    pg_v1: dict[str, Any], zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    name = pg_v1["stack"]
    _write(pg_v1["public_url"], "before the rehearsal")
    server = server_of(pulumi, name)
    before = primary_content(server, PRIMARY)

    preview = zdd("rehearse", "-s", name, "--version", "v1.1", "--preview", "--json")
    assert preview.code == 0, preview.stderr
    assert "pg_basebackup" in preview.json()["steps"][0]

    passed = zdd("rehearse", "-s", name, "--version", "v1.1", "--json")
    assert passed.code == 0, passed.stderr
    verdict = passed.json()
    assert verdict["compatible"] and verdict["migration_ok"], verdict
    assert verdict["copy"]["rows"] >= 13 and verdict["copy"]["bytes"] > 0
    assert "POST /api/articles" in verdict["passed"]
    # The copy was migrated (v1.1 adds articles.author) and written to; the primary was not.
    after = primary_content(server, PRIMARY)
    assert after == before
    assert ("author",) not in after["columns"]
    _no_rehearsal_left(name)


def test_a_failed_migration_is_reported_with_its_output_and_the_primary_untouched(
    pg_v1: dict[str, Any], zdd: Callable[..., Result], pulumi: Callable[..., Result]
) -> None:
    name = pg_v1["stack"]
    server = server_of(pulumi, name)
    before = primary_content(server, PRIMARY)
    failed = zdd("rehearse", "-s", name, "--version", "v3-bad-migration", "--json")
    assert failed.code == 0, failed.stderr
    verdict = failed.json()
    assert not verdict["compatible"] and not verdict["migration_ok"]
    assert verdict["failure"]["step"] == "migration"
    assert verdict["failure"]["request"] == "bin/sampleapp migrate"
    assert "headline" in verdict["migration_output"]
    assert primary_content(server, PRIMARY) == before
    _no_rehearsal_left(name)
    # And `--strategy compatible` is refused on it, with nothing changed.
    refused = zdd("deploy", "-s", name, "--version", "v3-bad-migration", "--strategy",
                  "compatible", "--json")  # fmt: skip
    assert refused.code == 3 and "migration" in refused.json()["error"]
    assert zdd("status", "-s", name, "--json").json()["state"] == "idle"


def test_a_killed_rehearsal_is_cleaned_by_the_next_one_and_by_destroy(
    pg_v1: dict[str, Any], zdd: Callable[..., Result], engine_env: dict[str, str]
) -> None:
    name = pg_v1["stack"]
    scratch = stack_dir(name) / SCRATCH
    rehearse = ["rehearse", "-s", name, "--version", "v1.1"]
    # Killed with its scratch server up: the server outlives the driver.
    killed_in(rehearse, "rehearsal: v1.1's migration on the copy", engine_env, pause=0.3)
    assert processes_naming(scratch), "the killed rehearsal's scratch server is not running"
    again = zdd(*rehearse, "--json")
    assert again.code == 0, again.stderr
    assert again.json()["compatible"], again.json()
    _no_rehearsal_left(name)
    killed_in(rehearse, "rehearsal: v1.1's migration on the copy", engine_env, pause=0.3)
    assert processes_naming(scratch), "the killed rehearsal's scratch server is not running"
    # `local_stack` destroys the stack now and fails the test if any server (the scratch
    # cluster's among them) or the stack's folder is left.


def test_the_compatible_path_on_postgresql_under_load_keeps_every_write(
    pg_v1: dict[str, Any], zdd: Callable[..., Result]
) -> None:
    name, public = pg_v1["stack"], pg_v1["public_url"]
    auto = zdd("deploy", "-s", name, "--version", "v1.1", "--strategy", "auto", "--probe",
               "--yes", "--json")  # fmt: skip
    assert auto.code == 0, auto.stderr
    shipped = auto.json()
    assert shipped["strategy"] == "compatible", shipped["strategy_reason"]
    assert shipped["read_only_window_seconds"] == 0
    probe = shipped["probe"]
    assert probe["writes_acknowledged"] > 0
    # Every acknowledged write is looked up again once the deployment ends (`writes_lost`).
    assert (probe["failed"], probe["writes_refused"], probe["writes_lost"]) == (0, 0, 0), probe
    assert (probe["writes_held"], probe["writes_hidden"]) == (0, 0), probe
    status = zdd("status", "-s", name, "--json").json()
    assert (status["state"], status["current_version"]) == ("idle", "v1.1")
    _write(public, "after the deployment")


def test_a_rollback_with_database_on_the_compatible_path_reports_what_postgresql_took(
    pg_v1: dict[str, Any], zdd: Callable[..., Result]
) -> None:
    name, public = pg_v1["stack"], pg_v1["public_url"]
    paused_for_approval(zdd, name, "v1.1", "--strategy", "compatible")
    _write(public, "after-the-restore-point")
    rolled = zdd("rollback", "-s", name, "--with-database", "--accept-data-loss", "--json")
    assert rolled.code == 0, rolled.stderr
    lost = rolled.json()["lost_writes"]
    assert lost["rows"] == 1, lost
    assert [row["title"] for row in lost["tables"]["articles"]["added"]] == [
        "after-the-restore-point"
    ]
    assert PRIMARY in lost["archive"]
    status = zdd("status", "-s", name, "--json").json()
    assert (status["state"], status["current_version"]) == ("idle", "v1")
    assert status["database_generation"] == 2
