"""The Azure restore point's proof: recorded before the primary changes, bound to its
point in time, its digest read by the app spec's command (never made up), and enough for the
driver's planner to allow a rollback with database."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from infra.azure.restore_point import DigestFailed, RestorePointProvider, read_digest
from tests.helpers.azure_mocks import (
    DIGEST,
    MIGRATION_PASSWORD,
    PASSWORD,
    TAKEN_AT,
    Run,
    app_spec,
    run_program,
)
from tests.helpers.settings import LATER_RESTORE_POINT, RESTORE_POINT, phase_settings
from zdd.actions import Action, Refused, StackState, plan
from zdd.phases import RESTORE_POINT_SUFFIX, Phase, RestorePointTaken

POINT = f"primary-db{RESTORE_POINT_SUFFIX}"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# -- the program: what is recorded, when, and on which database ----------------------------


@pytest.fixture(scope="module")
def deploy() -> Run:
    return run_program(phase_settings(Phase.DEPLOY))


def test_the_restore_point_is_recorded_before_the_primary_changes(deploy: Run):
    point = deploy.named(POINT)
    assert point.inputs["restore_point"] == RESTORE_POINT
    assert point.inputs["database"] == "site-g1"
    assert point.inputs["argv"] == ["python", "-m", "site_migrations", "digest"]
    # It reads the database with the migration's own login, never the administrator's.
    connection = point.inputs["environment"]["ZDD_DATABASE_CONNECTION"]
    assert "Initial Catalog=site-g1;" in connection
    assert f"User ID=migrator;Password={MIGRATION_PASSWORD};" in connection
    assert PASSWORD not in connection and "environment" in point.secrets
    # After its database and this machine's firewall rule; before the migration and the code.
    assert deploy.named("primary-db-g1").urn in point.dependencies
    assert deploy.named("azure-sql-operator-0").urn in point.dependencies
    assert point.urn in deploy.named("primary-db-migration").dependencies
    assert point.urn in deploy.named("primary-app").dependencies


def test_no_restore_point_before_deploy_nor_after_the_deployment():
    for phase in (Phase.IDLE, Phase.CLONE, Phase.CUTOVER):
        run = run_program(phase_settings(phase))
        assert not run.has(POINT) and run.outputs["restore_point"] is None
    assert not run_program(phase_settings(Phase.IDLE, current_version="v2")).has(POINT)


def test_the_program_exports_the_proof_the_driver_reads(deploy: Run):
    taken = RestorePointTaken.from_record(deploy.outputs["restore_point"])
    assert taken == RestorePointTaken(RESTORE_POINT, TAKEN_AT, DIGEST)


def test_a_rollback_with_database_keeps_the_proof_it_restores_from():
    point = run_program(phase_settings(Phase.DEPLOY)).named(POINT)
    restoring = run_program(
        phase_settings(
            Phase.DEPLOY,
            target_version="v1",
            migrate_to="v1",
            database_generation=2,
            restored_from=RESTORE_POINT,
        )
    )
    again = restoring.named(POINT)
    # Still the point taken on generation 1 (the provider replaces it on a new point only).
    assert (again.inputs["restore_point"], again.inputs["database"]) == (RESTORE_POINT, "site-g1")
    assert again.inputs["argv"] == point.inputs["argv"]
    # The next deployment takes its own on the restored generation.
    later = run_program(
        phase_settings(
            Phase.DEPLOY,
            restore_point=LATER_RESTORE_POINT,
            database_generation=2,
            restored_from=RESTORE_POINT,
        )
    ).named(POINT)
    assert (later.inputs["restore_point"], later.inputs["database"]) == (
        LATER_RESTORE_POINT,
        "site-g2",
    )


def test_without_a_digest_command_nothing_is_claimed():
    run = run_program(phase_settings(Phase.DEPLOY), app=app_spec(digest=None))
    assert not run.has(POINT) and run.outputs["restore_point"] is None


# -- the planner: a rollback with database needs that proof ---------------------------------


def _state(record: object) -> StackState:
    settings = phase_settings(Phase.DEPLOY)
    return StackState(
        settings, Phase.DEPLOY, restore_point_taken=RestorePointTaken.from_record(record)
    )


def test_a_rollback_with_database_is_allowed_once_the_proof_exists(deploy: Run):
    change = plan(Action.ROLLBACK_DATABASE, _state(deploy.outputs["restore_point"]))
    assert change["restoredFrom"] == RESTORE_POINT and change["databaseGeneration"] == "2"


def test_a_rollback_with_database_is_refused_without_the_proof():
    unproven = run_program(phase_settings(Phase.DEPLOY), app=app_spec(digest=None))
    with pytest.raises(Refused, match="no restore point was proven taken"):
        plan(Action.ROLLBACK_DATABASE, _state(unproven.outputs["restore_point"]))


def test_what_the_provider_records_is_the_proof_the_planner_accepts(tmp_path: Path):
    made = RestorePointProvider().create(
        {
            "restore_point": RESTORE_POINT,
            "database": "site-g1",
            "argv": _python("print('sha256:' + 'ab' * 32)"),
            "environment": {"ZDD_DATABASE_CONNECTION": "Server=tcp:x;Password=hush;"},
            "attempts": 1,
            "pause_seconds": 0,
        }
    )
    assert made.id == RESTORE_POINT
    assert made.outs is not None and made.outs["digest"] == "sha256:" + "ab" * 32
    assert "hush" not in repr(made.outs)  # the connection is not kept as an output
    assert plan(Action.ROLLBACK_DATABASE, _state(made.outs))["restoredFrom"] == RESTORE_POINT


def test_the_provider_keeps_its_record_until_the_point_in_time_changes():
    provider = RestorePointProvider()
    old = {"restore_point": RESTORE_POINT, "database": "site-g1", "digest": DIGEST}
    same = provider.diff(RESTORE_POINT, old, {**old, "database": "site-g2", "argv": ["other"]})
    assert not same.changes
    new = provider.diff(RESTORE_POINT, old, {**old, "restore_point": LATER_RESTORE_POINT})
    assert new.changes and new.replaces == ["restore_point"]


# -- the digest is read, never made up -------------------------------------------------------


def test_the_digest_is_what_the_command_prints_with_the_database_in_its_environment():
    code = "import os; print('rows:3', os.environ['ZDD_DATABASE_NAME'])"
    digest = read_digest(
        _python(code), {"ZDD_DATABASE_NAME": "site-g1"}, attempts=1, pause_seconds=0
    )
    assert digest == "rows:3 site-g1"


def test_the_command_is_retried_while_the_firewall_rule_applies(tmp_path: Path):
    tries = tmp_path / "tries"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(tries)!r}); "
        "n = len(p.read_text()) + 1 if p.exists() else 1; p.write_text('x' * n); "
        "print('d1') if n >= 3 else sys.exit(1)"
    )
    pauses: list[float] = []
    assert read_digest(_python(code), {}, attempts=5, pause_seconds=7, sleep=pauses.append) == "d1"
    assert tries.read_text() == "xxx" and pauses == [7, 7]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import sys; sys.stderr.write('login failed for migrator'); sys.exit(4)", "exit 4: login"),
        ("pass", "printed '', not one line"),
        ("print('a'); print('b')", "printed 'a\\nb', not one line"),
    ],
)
def test_a_digest_command_that_gives_no_digest_records_nothing(code: str, message: str):
    with pytest.raises(DigestFailed, match=re.escape(message)) as failed:
        read_digest(_python(code), {}, attempts=2, pause_seconds=0, sleep=lambda _: None)
    assert "no restore point was recorded and the primary was not changed" in str(failed.value)


def test_a_missing_digest_program_records_nothing(tmp_path: Path):
    with pytest.raises(DigestFailed, match="cannot run"):
        read_digest([str(tmp_path / "absent")], {}, attempts=3, pause_seconds=0)
