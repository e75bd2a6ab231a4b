"""Sites the platform did not write, through their app specs: bad specs are refused before
anything changes, and a release that cannot start, a health path that never answers and a
migration that fails each stop the deployment with a last line naming the spec field."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sampleapp.__main__ import make_releases
from tests.helpers.commands import Result, config_file
from tests.helpers.specs import write_spec
from zdd.environment import Environment
from zdd.sqlite_files import data_digest
from zdd.targets.local import LOCAL


@pytest.mark.parametrize(
    ("spec_text", "version", "message"),
    [
        (None, "v7", "app spec `releases`: version 'v7' has no release folder"),
        ("releases: releases/{version}\nstart: ./run --port {port}\n", "v1", "field `start`"),
        ("releases: releases/{version}\nstart: [x]\nhelth: {}\n", "v1", "field `helth`"),
        ("releases: [\n", "v1", "not valid YAML"),
    ],
)
def test_init_refuses_a_bad_spec_before_anything(
    tmp_path: Path,
    zdd: Callable[..., Result],
    spec_text: str | None,
    version: str,
    message: str,
) -> None:
    spec = write_spec(tmp_path)
    if spec_text is not None:
        spec.write_text(spec_text)
    name = f"bad-spec-{tmp_path.name[-12:]}".replace("_", "-")
    result = zdd("init", "--stack", name, "--version", version, "--app", str(spec), "--json")
    assert result.code == 2, result.stderr
    error = result.json()["error"]
    assert message in error and len(error.splitlines()) == 1, error
    assert not config_file(name).exists()


@pytest.mark.engine
def test_start_and_migrate_failures_name_the_spec_field_and_stay_recoverable(
    tmp_path: Path, local_stack: Callable[..., dict[str, Any]], zdd: Callable[..., Result]
) -> None:
    stack = local_stack("v1", write_spec(tmp_path))
    name = stack["stack"]
    before = config_file(name).read_text()

    missing = zdd("deploy", "-s", name, "--version", "v7", "--yes", "--json")
    assert missing.code == 2
    assert "app spec `releases`: version 'v7' has no release folder" in missing.json()["error"]
    assert config_file(name).read_text() == before

    cannot_start = zdd("deploy", "-s", name, "--version", "v9-cannot-start", "--yes", "--json")
    assert cannot_start.code == 5, cannot_start.stderr
    error = cannot_start.json()["error"]
    assert "app spec `start` of v9-cannot-start (primary) failed" in error
    assert "this release cannot start" in error, error  # the site's last words, from its log

    bad_migration = zdd("rollforward", "-s", name, "--version", "v3-bad-migration", "--json")
    assert bad_migration.code == 5, bad_migration.stderr
    assert "app spec `migrate` of v3-bad-migration failed" in bad_migration.json()["error"]

    back = zdd("rollback", "-s", name, "--with-database", "--json")
    assert back.code == 0, back.stderr
    status = zdd("status", "-s", name, "--json").json()
    assert (status["phase"], status["current_version"], status["traffic"]) == (
        "idle",
        "v1",
        "primary",
    )


@pytest.mark.engine
def test_a_release_whose_health_path_never_answers_fails_the_gate_naming_health(
    local_stack: Callable[..., dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    # The sample's v3-unhealthy answers 500 on its health path.
    name = local_stack("v1")["stack"]
    assert pulumi("config", "set", "-s", name, "zdd:gateTimeoutSeconds", "5").code == 0
    result = zdd("deploy", "-s", name, "--version", "v3-unhealthy", "--yes", "--json")
    assert result.code == 4, result.stderr
    error = result.json()["error"]
    assert "the primary on v3-unhealthy is not healthy after 5s" in error
    assert "answered 500" in error and "`health` path is /healthz" in error
    # v1 cannot run on the schema v3-unhealthy migrated to: the database goes back too.
    back = zdd("rollback", "-s", name, "--with-database", "--json")
    assert back.code == 0, back.stderr
    status = zdd("status", "-s", name, "--json").json()
    assert (status["phase"], status["current_version"]) == ("idle", "v1")


def test_a_read_only_clone_whose_database_changed_is_a_violation(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    database = env.stack_dir("site") / "clone-g1.sqlite"
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE articles (title TEXT)")
    outputs = {
        "mode": "read-only",
        "clone_database": database.name,
        "clone_database_digest": data_digest(database),
    }
    check = LOCAL.read_only_violation
    assert check is not None
    assert check(env, "site", outputs) is None
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO articles VALUES ('written to a read-only clone')")
    violation = check(env, "site", outputs)
    assert violation is not None and violation.startswith("read-only violation: ")
    # A read-write clone is expected to change: its writes are reported as lost writes instead.
    assert check(env, "site", {**outputs, "mode": "read-write"}) is None


def test_a_sample_release_runs_its_own_version(tmp_path: Path) -> None:
    make_releases(tmp_path / "releases")
    database = tmp_path / "site.sqlite"
    launcher = tmp_path / "releases" / "v2" / "bin" / "sampleapp"
    done = subprocess.run([launcher, "migrate", "--database", database], check=False)
    assert done.returncode == 0
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
