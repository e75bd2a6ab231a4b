"""An Azure stack on Azure Database for PostgreSQL flexible server, phase by phase under Pulumi's
mocks (the recording monitor of tests/helpers/azure_mocks.py), and the clone's copy and access
(`infra.azure.postgres_copy`) against fakes of the tools and of the server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.azure.postgres import database_url
from infra.azure.postgres_copy import (
    CLONE_ROLE,
    PostgresCopyFailed,
    access_statements,
    copy_database,
    dump_and_restore,
)
from policies.model import Resource, StackConfig
from policies.rules import evaluate
from tests.helpers.azure_mocks import (
    BASE_CONFIG,
    CLONE_PASSWORD,
    ENDPOINT,
    HOST_G1,
    HOST_G2,
    PASSWORD,
    PG_DATABASE,
    PG_FIREWALL,
    POSTGRES_APP,
    SERVER,
    SUBSCRIPTION,
    Registration,
    Run,
    run_program,
)
from tests.helpers.policy_checks import changed, check, config_for, named, stack_check
from tests.helpers.policy_checks import resource_of as policy_resource
from tests.helpers.settings import RESTORE_POINT, RESTORED
from tests.helpers.settings import phase_settings as stack
from zdd.errors import RefusedTransition
from zdd.phases import Mode, Phase, PhaseSettings
from zdd.targets import azure
from zdd.targets.azure import DatabaseBackups


def pg_program(phase: Phase, **overrides: Any) -> Run:
    keys = overrides.pop("keys", {})
    return run_program(stack(phase, **overrides), app=POSTGRES_APP, **keys)


# Each scenario is declared once for the whole module (a program run costs about a second).
PG_SCENARIOS = {
    "idle": stack(Phase.IDLE),
    "clone": stack(Phase.CLONE),
    "deploy": stack(Phase.DEPLOY),
    "rollback-database": stack(Phase.DEPLOY, target_version="v1", migrate_to="v1", **RESTORED),
}


@pytest.fixture(scope="module")
def pg_runs() -> Iterator[dict[str, Run]]:
    yield {name: run_program(settings, app=POSTGRES_APP) for name, settings in PG_SCENARIOS.items()}


def _connection(app: Registration) -> str:
    (entry,) = app.inputs["siteConfig"]["connectionStrings"]
    assert entry["name"] == "EPiServerDB" and entry["type"] == "PostgreSQL"
    assert "siteConfig" in app.secrets, "the connection string must be a secret"
    return str(entry["connectionString"])


# -- the primary ---------------------------------------------------------------------------


def test_the_primary_is_a_protected_flexible_server_with_the_sites_database(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["idle"]
    assert not run.of_type("azure-native:sql:Server") and not run.of_type(
        "azure-native:sql:Database"
    )
    server = run.named("primary-db-g1")
    assert server.type == SERVER and server.protect and not server.retain_on_delete
    assert server.inputs["createMode"] == "Create"
    assert server.inputs["serverName"] == "zdd-test-a1b2c3-pg-g1"
    assert server.inputs["version"] == "16"
    assert server.inputs["sku"] == {"name": "Standard_B1ms", "tier": "Burstable"}
    assert server.inputs["backup"]["backupRetentionDays"] == 14
    assert server.inputs["administratorLogin"] == "zddadmin"
    assert "administratorLoginPassword" in server.secrets
    database = run.named("primary-db-g1-database")
    assert database.type == PG_DATABASE and database.protect
    assert database.inputs["databaseName"] == "site"
    assert run.outputs["primary_database"] == "site"


def test_the_operator_reaches_each_server_through_its_firewall_and_the_apps_privately(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["idle"]
    (rule,) = run.of_type(PG_FIREWALL)
    assert rule.inputs["serverName"] == "zdd-test-a1b2c3-pg-g1"
    assert rule.inputs["startIpAddress"] == rule.inputs["endIpAddress"] == "203.0.113.7"
    (endpoint,) = run.of_type(ENDPOINT)
    (link,) = endpoint.inputs["privateLinkServiceConnections"]
    assert link["groupIds"] == ["postgresqlServer"]
    assert link["privateLinkServiceId"] == run.named("primary-db-g1").id
    assert endpoint.inputs["subnet"]["id"] == run.named("azure-data-subnet").id
    zone = run.named("azure-postgres-zone")
    assert zone.inputs["privateZoneName"] == "privatelink.postgres.database.azure.com"
    (group,) = run.of_type("azure-native:network:PrivateDnsZoneGroup")
    assert group.inputs["privateDnsZoneConfigs"][0]["privateDnsZoneId"] == zone.id
    # No Azure SQL rule on the apps' subnet, and no 0.0.0.0 rule anywhere.
    assert not run.of_type("azure-native:sql:VirtualNetworkRule")
    assert all(r.inputs["startIpAddress"] != "0.0.0.0" for r in run.of_type(PG_FIREWALL))


def test_the_site_gets_a_postgresql_url_with_tls_as_a_secret(pg_runs: dict[str, Run]) -> None:
    run = pg_runs["idle"]
    url = _connection(run.named("primary-app"))
    assert url == database_url(HOST_G1, "site", "zddadmin", PASSWORD)
    assert url.startswith(f"postgresql://zddadmin:{PASSWORD.replace('!', '%21')}@{HOST_G1}:5432/")
    assert url.endswith("/site?sslmode=require")
    assert run.outputs["connection_is_secret"] is True


def test_the_restore_point_is_recorded_before_the_migration_which_runs_as_the_migrator(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["deploy"]
    point = run.named("primary-db-restore-point")
    assert point.inputs["restore_point"] == RESTORE_POINT
    assert point.inputs["database"] == "zdd-test-a1b2c3-pg-g1"
    migration = run.named("primary-db-migration")
    assert point.urn in migration.dependencies
    assert run.named("primary-db-g1-operator-0").urn in point.dependencies
    environment = migration.inputs["environment"]
    assert environment["PGHOST"] == HOST_G1 and environment["PGUSER"] == "migrator"
    assert environment["PGDATABASE"] == "site" and environment["PGSSLMODE"] == "require"
    assert environment["ZDD_DATABASE_CONNECTION"].startswith("postgresql://migrator:")
    assert "environment" in migration.secrets  # the passwords in it are secrets
    assert run.outputs["restore_point"]["restore_point"] == RESTORE_POINT
    # The site starts on the new release once both are done.
    assert migration.urn in run.named("primary-app").dependencies


def test_a_rollback_with_database_restores_into_a_new_server_at_the_restore_point(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["rollback-database"]
    restored = run.named("primary-db-g2")
    assert restored.inputs["createMode"] == "PointInTimeRestore"
    assert restored.inputs["sourceServerResourceId"].endswith(
        "/providers/Microsoft.DBforPostgreSQL/flexibleServers/zdd-test-a1b2c3-pg-g1"
    )
    assert restored.inputs["pointInTimeUTC"] == RESTORE_POINT
    assert restored.protect and restored.create_timeout == "12h"
    # The generation restored from stays until the deployment ends, then is forgotten, kept.
    previous = run.named("primary-db-g1")
    assert previous.retain_on_delete and not previous.protect
    assert "pointInTimeUTC" in previous.ignore_changes
    # The restored server brings its database; the site and the migration use the new one.
    assert not run.has("primary-db-g2-database")
    assert HOST_G2 in _connection(run.named("primary-app"))
    assert run.named("primary-db-migration").inputs["environment"]["PGHOST"] == HOST_G2
    assert run.named("primary-db-g2-operator-0").inputs["serverName"] == "zdd-test-a1b2c3-pg-g2"


# -- the clone -----------------------------------------------------------------------------


def test_a_read_only_clone_reads_a_copy_in_the_primarys_server_as_its_own_role(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["clone"]
    copy = run.named("clone-db-copy")
    assert copy.type == PG_DATABASE and copy.inputs["databaseName"] == "site-clone"
    assert copy.inputs["serverName"] == "zdd-test-a1b2c3-pg-g1"
    assert "serverName" in copy.ignore_changes and not copy.protect
    access = run.named("clone-db-access")
    assert access.inputs["host"] == HOST_G1
    assert (access.inputs["source"], access.inputs["destination"]) == ("site", "site-clone")
    assert access.inputs["read_only"] is True and access.inputs["owner"] == "migrator"
    assert "admin_password" in access.secrets
    assert copy.urn in access.dependencies
    assert run.named("primary-db-g1-operator-0").urn in access.dependencies
    clone = _connection(run.named("clone-app"))
    assert clone == database_url(HOST_G1, "site-clone", CLONE_ROLE, CLONE_PASSWORD)
    assert access.urn in run.named("clone-app").dependencies
    assert "zddadmin" not in clone and PASSWORD not in clone
    assert not run.has("clone-db-migration")


def test_a_later_restore_of_the_primary_leaves_the_clones_copy_where_it_is(
    pg_runs: dict[str, Run],
) -> None:
    run = pg_runs["rollback-database"]
    access = run.named("clone-db-access")
    assert {"host", "source"} <= set(access.ignore_changes)
    assert "serverName" in run.named("clone-db-copy").ignore_changes


def test_a_read_write_clones_copy_is_kept_under_its_deployments_name() -> None:
    run = pg_program(
        Phase.CLONE, mode=Mode.READ_WRITE, accept_data_loss=True, keys={"deploymentId": "d42"}
    )
    copy = run.named("clone-db-copy")
    assert copy.inputs["databaseName"] == "site-clone-d42" and copy.retain_on_delete
    assert run.named("clone-db-access").inputs["read_only"] is False


def test_an_engine_the_stack_cannot_have_is_refused_before_anything_is_declared() -> None:
    with pytest.raises(Exception, match="postgresVersion '12'"):
        run_program(stack(Phase.IDLE), app=POSTGRES_APP, postgresVersion="12")


# -- the copy and the clone's role, against fakes -----------------------------------------


class FakeCursor:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchall(self) -> list[Any]:
        return self.rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None


class FakeServer:
    """A PostgreSQL server as psycopg shows it: remembers statements, answers the reads."""

    def __init__(self, *, writable_after: int = 0, refuse_first: int = 0) -> None:
        self.statements: list[str] = []
        self.writable_after = writable_after
        self.refuse = refuse_first
        self.read_only_set = False

    def connect(self, conninfo: str, **options: Any) -> FakeServer:
        if self.refuse:
            self.refuse -= 1
            raise OSError("connection refused (the firewall rule is not applied yet)")
        assert "sslmode=require" in conninfo and options["password"] == PASSWORD
        return self

    def execute(self, statement: str, params: Any = None) -> FakeCursor:
        self.statements.append(statement)
        if "default_transaction_read_only = on" in statement and "DATABASE" in statement:
            self.read_only_set = True
        if statement.startswith("SELECT nspname"):
            return FakeCursor([("public",)])
        if statement.startswith("SELECT 1 FROM pg_roles"):
            return FakeCursor([])
        if "table_privileges" in statement:
            return FakeCursor([(self.writable_after,)])
        if "pg_db_role_setting" in statement:
            value = "on" if self.read_only_set else "off"
            return FakeCursor([(f"default_transaction_read_only={value}",)])
        return FakeCursor([])

    def close(self) -> None:
        pass


def _copy(server: FakeServer, pipes: list[Any], *, read_only: bool = True, code: int = 0) -> Any:
    def pipe(dump: Sequence[str], restore: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
        pipes.append((list(dump), list(restore), env))
        return code, "" if code == 0 else "pg_restore: error: could not connect"

    return copy_database(
        host=HOST_G1, source="site", destination="site-clone", admin_login="zddadmin",
        admin_password=PASSWORD, owner="migrator", read_only=read_only, attempts=3,
        pause_seconds=0, pipe=pipe, connect=server.connect, sleep=lambda _: None,
    )  # fmt: skip


def test_the_copy_is_one_dump_restored_as_the_migrators_then_a_read_only_role() -> None:
    server = FakeServer(refuse_first=1)
    pipes: list[Any] = []
    outs = _copy(server, pipes)
    ((dump, restore, env),) = pipes
    assert dump[0] == "pg_dump" and "dbname=site " in dump[-1]
    assert restore[0] == "pg_restore" and "--role=migrator" in restore
    assert "--single-transaction" in restore and "dbname=site-clone " in restore[-1]
    assert env == {"PGPASSWORD": PASSWORD}
    assert all(PASSWORD not in arg for arg in dump + restore)
    assert outs["user"] == CLONE_ROLE and outs["write_privileges"] == 0
    assert outs["database_settings"] == "default_transaction_read_only=on"
    done = "\n".join(server.statements)
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "zdd_clone"' in done
    assert "INSERT" not in done.split("table_privileges")[0].split("REVOKE")[1]
    assert 'ALTER ROLE "zdd_clone" SET default_transaction_read_only = on' in done


def test_a_copy_whose_role_could_still_write_fails_before_the_clone_exists() -> None:
    with pytest.raises(PostgresCopyFailed, match="write privilege"):
        _copy(FakeServer(writable_after=2), [])


def test_a_failed_restore_is_retried_then_named() -> None:
    pipes: list[Any] = []
    with pytest.raises(PostgresCopyFailed, match=r"after 3 attempt.*pg_restore: error"):
        _copy(FakeServer(), pipes, code=1)
    assert len(pipes) == 3


def test_a_read_write_role_may_write_rows_and_the_tables_a_migration_adds() -> None:
    statements = access_statements(
        "site-rehearsal", "pw", ["public"], read_only=False, owner="migrator", role_exists=True
    )
    text = "\n".join(statements)
    assert statements[0].startswith('ALTER ROLE "zdd_clone" WITH LOGIN')
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "public"' in text
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "migrator" IN SCHEMA "public"' in text
    # PUBLIC loses CONNECT on the copy, the migration login (which migrates it) keeps it.
    revoke = text.index('REVOKE ALL ON DATABASE "site-rehearsal" FROM PUBLIC')
    assert (
        text.index('GRANT CONNECT, TEMPORARY ON DATABASE "site-rehearsal" TO "migrator"') > revoke
    )
    assert "default_transaction_read_only = off" in text
    # A name with a quote cannot break out of its identifier.
    (first, *_rest) = access_statements(
        'x"; DROP', "p'w", [], read_only=True, owner=None, role_exists=False
    )
    assert "PASSWORD 'p''w'" in first
    assert dump_and_restore("h", "a", "b", "admin", None)[1][-1].endswith(
        "user=admin sslmode=require"
    )


# -- the driver: when a flexible server can restore a point ---------------------------------

PG_ID = (
    f"{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/x-pg-g1"
)
SQL_ID = f"{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Sql/servers/x/databases/site-g1"
T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)


@dataclass
class FakeArm:
    """Resource Manager in virtual time, answering for one server."""

    backups: DatabaseBackups
    elapsed: float = 0.0

    def database_backups(self, database_id: str) -> DatabaseBackups:
        assert database_id == PG_ID
        return self.backups

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def route_state(self, route_id: str) -> Any:
        raise AssertionError("no Front Door here")

    def origin_requests(self, *args: Any) -> Any:
        raise AssertionError("no Front Door here")


def test_a_flexible_servers_backups_are_read_where_its_api_puts_them() -> None:
    server = {
        "properties": {"backup": {"earliestRestoreDate": "2025-02-26T10:00:00.1234567+00:00"}},
        "systemData": {"createdAt": "2025-01-01T00:00:00Z"},
    }
    backups = azure.backups_of(PG_ID, server)
    assert backups.earliest_restore == datetime(2025, 2, 26, 10, 0, 0, 123456, tzinfo=UTC)
    assert backups.created == datetime(2025, 1, 1, tzinfo=UTC)
    # The same answer read as an Azure SQL database has no restorable point at all.
    assert azure.backups_of(SQL_ID, server).earliest_restore is None
    assert azure.on_postgres(PG_ID) and not azure.on_postgres(SQL_ID)


def test_a_rollback_waits_until_the_wal_archive_covers_the_point() -> None:
    fake = FakeArm(DatabaseBackups(T0 - timedelta(days=3), T0 - timedelta(days=30)))
    point = T0 - timedelta(minutes=2)
    said: list[str] = []
    outputs = {"primary_database_id": PG_ID}
    azure.wait_restorable(
        outputs, f"{point:%Y-%m-%dT%H:%M:%SZ}", said.append, fake, azure.Clock(sleep=fake.sleep)
    )
    covered = point + timedelta(seconds=azure.WAL_ARCHIVED_COVERED_SECONDS)
    assert azure.WAL_ARCHIVED_COVERED_SECONDS > azure.LOG_BACKUP_COVERED_SECONDS
    assert covered <= fake.now() < covered + timedelta(seconds=31)
    assert said and "write-ahead log" in said[0] and "PostgreSQL" in said[0]
    young = FakeArm(DatabaseBackups(T0 - timedelta(minutes=1), T0 - timedelta(minutes=5)))
    with pytest.raises(RefusedTransition, match="Azure Database for PostgreSQL cannot restore"):
        azure.wait_restorable(outputs, f"{point:%Y-%m-%dT%H:%M:%SZ}", print, young)


# -- the policy pack checks what it checks for Azure SQL ------------------------------------


def _pg_resources(run: Run) -> list[Resource]:
    return [policy_resource(r) for r in run.registrations]


def _pg_config(settings: PhaseSettings) -> StackConfig:
    return config_for(settings, {**BASE_CONFIG, "zdd:app": POSTGRES_APP})


@pytest.mark.parametrize("scenario", list(PG_SCENARIOS))
def test_a_postgres_stack_passes_every_policy(pg_runs: dict[str, Run], scenario: str) -> None:
    settings = PG_SCENARIOS[scenario]
    assert evaluate(_pg_resources(pg_runs[scenario]), _pg_config(settings)) == {}


def test_the_policies_guard_a_postgres_primary_as_they_guard_an_azure_sql_one(
    pg_runs: dict[str, Run],
) -> None:
    settings = PG_SCENARIOS["rollback-database"]
    resources, config = _pg_resources(pg_runs["rollback-database"]), _pg_config(settings)
    restored = named(resources, "primary-db-g2")
    assert check("primary-database-protected", restored, config) == []
    unprotected = dataclasses.replace(restored, protect=False)
    assert check("primary-database-protected", unprotected, config)
    elsewhere = changed(
        restored, "sourceServerResourceId", restored.props["sourceServerResourceId"][:-1] + "7"
    )
    assert "must restore generation 1" in check("primary-database-protected", elsewhere, config)[0]
    wrong_time = changed(restored, "pointInTimeUTC", "2025-03-01T10:00:00Z")
    assert (
        "not to the recorded restore point"
        in check("primary-database-protected", wrong_time, config)[0]
    )
    short = changed(restored, "backup.backupRetentionDays", 3)
    assert "3 days" in check("backup-retention-7-days", short, config)[0]
    (rule, *_) = [r for r in resources if r.type == PG_FIREWALL]
    open_rule = changed(changed(rule, "startIpAddress", "0.0.0.0"), "endIpAddress", "0.0.0.0")
    assert check("sql-server-not-open-to-all", open_rule, config)
    gone = [r for r in resources if r.name != "primary-db-g2"]
    assert stack_check("primary-database-present", gone, config)


def test_no_server_parameter_may_turn_tls_off() -> None:
    def parameter(name: str, value: str) -> Resource:
        props = {"configurationName": name, "value": value, "serverName": "x-pg-g1"}
        return Resource(type="azure-native:dbforpostgresql:Configuration", name=name, props=props)

    config = _pg_config(PG_SCENARIOS["idle"])
    assert check("postgres-server-tls", parameter("require_secure_transport", "ON"), config) == []
    assert check("postgres-server-tls", parameter("require_secure_transport", "off"), config)
    assert (
        check("postgres-server-tls", parameter("ssl_min_protocol_version", "TLSv1.3"), config) == []
    )
    assert check("postgres-server-tls", parameter("ssl_min_protocol_version", "TLSv1.1"), config)
    assert check("postgres-server-tls", parameter("work_mem", "64MB"), config) == []
