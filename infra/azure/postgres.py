"""The Azure database on Azure Database for PostgreSQL flexible server: the primary's server (one
per generation) with the site's database, or the clone's copy inside the primary's server.

The same concept, args and outputs as the Azure SQL database (`infra.azure.database`), with what
PostgreSQL does differently:

- a point-in-time restore makes a new **server** (`createMode: PointInTimeRestore`, from
  `sourceServerResourceId` at `pointInTimeUTC`), so a generation is a server
  `<prefix>-pg-g<N>` holding the database `<databaseName>`; a rollback with database restores
  generation N-1 into generation N and the primary's connection names the new server;
- the clone's copy is a database of the primary's server filled by `pg_dump | pg_restore`
  (`infra.azure.postgres_copy`): exact at its snapshot, made while the primary serves, and no
  new server to wait for, network and firewall (docs/azure.md says why);
- each server takes the operator's addresses as firewall rules (the migration, the digest and
  the copy run from there) and a private endpoint in the subnet `data`, through which the web
  apps reach it (a flexible server takes no service endpoint).
"""

from __future__ import annotations

import shlex
from functools import partial
from typing import Any
from urllib.parse import quote

import pulumi
from pulumi_azure_native import dbforpostgresql, network, web
from pulumi_command import local

from infra.azure.database import _copy_timeouts, restore_point_in_time, retrying
from infra.azure.foundation import AzureFoundation
from infra.azure.postgres_copy import PostgresCopy
from infra.azure.restore_point import RestorePoint
from infra.azure.settings import operator_network
from infra.components import DatabaseArgs
from zdd.appspec import fill
from zdd.phases import RESTORE_POINT_SUFFIX, DatabaseMode, Instance

POSTGRES_PORT = 5432
# The private link sub-resource of a flexible server.
PRIVATE_LINK_GROUP = "postgresqlServer"


def server_name(prefix: str, generation: int) -> str:
    return f"{prefix}-pg-g{generation}"


def server_host(name: str) -> str:
    """A flexible server's host name (inside the network, its private endpoint's address)."""
    return f"{name}.postgres.database.azure.com"


def database_url(host: str, database: str, user: str, password: str) -> str:
    """The connection as a URL, the form SQLAlchemy (psycopg) and dj-database-url read; TLS is
    required (Azure refuses plain connections)."""
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:"
        f"{POSTGRES_PORT}/{quote(database, safe='')}?sslmode=require"
    )


class AzurePostgresDatabase(pulumi.ComponentResource):
    """One database of the site, the way `AzureDatabase` is for Azure SQL:

    - primary: server generation 1 (`createMode: Create`, protected) with the site's database,
      or a point-in-time restore of the generation before; the migration and the restore
      point's digest run against it from the operator's machine, as the migration login;
    - clone: a database `<databaseName>-clone` in the primary's server, copied, with the
      clone's own role (read-only unless the clone may write); a rehearsal's copy
      (`<databaseName>-rehearsal`) is migrated to the release rehearsed;
    - existing: an earlier generation that a compatible clone still serves, only pointed at.
    """

    connection_type = web.ConnectionStringType.POSTGRE_SQL

    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:PostgresDatabase", name, None, opts)
        self._foundation = foundation
        settings = foundation.settings
        prefix = settings.name_prefix
        self.previous: dbforpostgresql.Server | None = None
        self.server: dbforpostgresql.Server | None = None
        self.migration: local.Command | None = None
        self.access: PostgresCopy | None = None
        self.restore_point: RestorePoint | None = None
        self.restore_point_taken: pulumi.Output[dict[str, Any]] | None = None
        self.copy_digest: pulumi.Output[str] | None = None
        self.archive: pulumi.Output[str] | None = None
        self.operator_rules: list[pulumi.Resource] = []
        before_changes: list[pulumi.Resource] = []
        if args.existing:
            # Declared by the generation that made it; this only names it.
            existing = server_name(prefix, args.generation)
            self.host: pulumi.Output[str] = pulumi.Output.from_input(server_host(existing))
            self.database_name: pulumi.Output[str] = pulumi.Output.from_input(
                settings.database_name
            )
            self.database_id: pulumi.Output[str] = pulumi.Output.concat(
                foundation.resource_group.id,
                f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{existing}",
            )
        elif args.role is Instance.PRIMARY:
            if args.generation > 1 and args.restored_from is None:
                raise pulumi.RunError(
                    f"database generation {args.generation} needs the restore point it was "
                    "restored from (zdd:restoredFrom)"
                )
            restoring = args.generation > 1 and args.restore_point == args.restored_from
            if restoring:
                self.previous = self._server(name, args.generation - 1, None, kept=True)
            self.server = self._server(
                name, args.generation, args.restored_from, kept=False, after=self.previous
            )
            before_changes.append(self.server)
            if args.generation == 1:
                # A restored server brings the database with it; the first one gets it here.
                before_changes.append(
                    dbforpostgresql.Database(
                        f"{name}-g1-database",
                        database_name=settings.database_name,
                        server_name=self.server.name,
                        resource_group_name=foundation.resource_group_name,
                        charset="UTF8",
                        collation="en_US.utf8",
                        opts=pulumi.ResourceOptions(parent=self, protect=True),
                    )
                )
            self.host = self.server.fully_qualified_domain_name
            self.database_name = pulumi.Output.from_input(settings.database_name)
            self.database_id = self.server.id
        else:
            self._copy(name, args)
            assert self.access is not None
            before_changes.append(self.access)
        before_changes += self.operator_rules
        app = settings.app
        schema = args.schema_version
        migrates = args.role is Instance.PRIMARY or args.rehearsal
        if migrates and not args.existing and schema and (app.migrate or app.digest):
            login, password = settings.migration_login, settings.migration_password
            if login is None or password is None:
                raise pulumi.RunError(
                    "the app spec's `migrate` and `digest` need zdd:migrationLogin and "
                    "zdd:migrationPassword (secret): they never run as the server "
                    "administrator (docs/azure.md)"
                )
            if args.role is Instance.PRIMARY and args.restore_point and app.digest:
                self.restore_point = self._restore_point(
                    name, args, schema, (login, password), before_changes
                )
                before_changes.append(self.restore_point)
                point = self.restore_point
                self.restore_point_taken = pulumi.Output.all(
                    restore_point=point.restore_point, taken_at=point.taken_at, digest=point.digest
                )
            if app.migrate:
                self.migration = local.Command(
                    f"{name}-migration",
                    create=self._filled(app.migrate, schema).apply(
                        lambda argv: retrying(
                            shlex.join(argv),
                            settings.migration_attempts,
                            settings.migration_retry_seconds,
                        )
                    ),
                    environment=self._operator_environment(args, schema, (login, password)),
                    triggers=[schema, args.generation],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(before_changes)),
                )
                before_changes.append(self.migration)
        # The site connects once the restore point and the migration are done, or, for the
        # clone, once its copy has its own role (and is read-only).
        if self.access is not None:
            site_login = self._url(self.access.user, self.access.password)
        else:
            site_login = self._url(settings.sql_admin_login, settings.sql_admin_password)
        connection = pulumi.Output.all(
            site_login, *(resource.urn for resource in before_changes)
        ).apply(lambda values: str(values[0]))
        self.connection: pulumi.Output[str] = pulumi.Output.secret(connection)
        self.register_outputs(
            {"database_name": self.database_name, "database_id": self.database_id}
        )

    # -- the primary's servers -------------------------------------------------------------

    def _server(
        self,
        name: str,
        generation: int,
        restored_from: str | None,
        *,
        kept: bool,
        after: pulumi.Resource | None = None,
    ) -> dbforpostgresql.Server:
        foundation = self._foundation
        settings = foundation.settings
        prefix = settings.name_prefix
        if generation == 1:
            restore: dict[str, Any] = {
                "create_mode": dbforpostgresql.CreateMode.CREATE,
                "administrator_login": settings.sql_admin_login,
                "administrator_login_password": settings.sql_admin_password,
            }
        else:
            # A restored server keeps the source's administrator and roles (the migration
            # login, the clone's role) with the data.
            restore = {
                "create_mode": dbforpostgresql.CreateMode.POINT_IN_TIME_RESTORE,
                "source_server_resource_id": pulumi.Output.concat(
                    foundation.resource_group.id,
                    "/providers/Microsoft.DBforPostgreSQL/flexibleServers/",
                    server_name(prefix, generation - 1),
                ),
                "point_in_time_utc": restore_point_in_time(restored_from)
                if restored_from
                else None,
            }
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=kept)
        server = dbforpostgresql.Server(
            f"{name}-g{generation}",
            server_name=server_name(prefix, generation),
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            version=settings.postgres_version,
            sku=dbforpostgresql.SkuArgs(name=settings.postgres_sku, tier=settings.postgres_tier),
            storage=dbforpostgresql.StorageArgs(
                storage_size_gb=settings.postgres_storage_gb,
                auto_grow=dbforpostgresql.StorageAutoGrow.ENABLED,
            ),
            backup=dbforpostgresql.BackupArgs(
                backup_retention_days=settings.backup_retention_days,
                geo_redundant_backup=dbforpostgresql.GeographicallyRedundantBackup.DISABLED,
            ),
            # Public access for the operator's firewall rules; the apps use the private endpoint.
            network=dbforpostgresql.NetworkArgs(
                public_network_access=dbforpostgresql.ServerPublicNetworkAccessState.ENABLED
            ),
            tags={"zdd-role": str(Instance.PRIMARY), "zdd-generation": str(generation)},
            **restore,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=not kept,
                retain_on_delete=kept,
                # A kept generation exists already: how it was made is history.
                ignore_changes=[
                    "createMode",
                    "sourceServerResourceId",
                    "pointInTimeUTC",
                    "administratorLogin",
                ]
                if kept
                else ["administratorLogin"],
                depends_on=[after] if after else None,
                custom_timeouts=_copy_timeouts(settings) if generation > 1 else None,
            ),
        )
        rules: list[pulumi.Resource] = []
        for index, address in enumerate(settings.operator_ip_addresses):
            operator = operator_network(address)
            rules.append(
                dbforpostgresql.FirewallRule(
                    f"{name}-g{generation}-operator-{index}",
                    firewall_rule_name=f"zdd-operator-{index}",
                    server_name=server.name,
                    resource_group_name=foundation.resource_group_name,
                    start_ip_address=str(operator.network_address),
                    end_ip_address=str(operator.broadcast_address),
                    opts=keep,
                )
            )
        if not kept:
            self.operator_rules = rules
        assert foundation.data_subnet is not None and foundation.postgres_zone is not None
        endpoint = network.PrivateEndpoint(
            f"{name}-g{generation}-endpoint",
            private_endpoint_name=f"{server_name(prefix, generation)}-pe",
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            subnet=network.SubnetArgs(id=foundation.data_subnet.id),
            private_link_service_connections=[
                network.PrivateLinkServiceConnectionArgs(
                    name=server_name(prefix, generation),
                    private_link_service_id=server.id,
                    group_ids=[PRIVATE_LINK_GROUP],
                )
            ],
            opts=keep,
        )
        network.PrivateDnsZoneGroup(
            f"{name}-g{generation}-endpoint-dns",
            private_dns_zone_group_name="default",
            private_endpoint_name=endpoint.name,
            resource_group_name=foundation.resource_group_name,
            private_dns_zone_configs=[
                network.PrivateDnsZoneConfigArgs(
                    name="postgres", private_dns_zone_id=foundation.postgres_zone.id
                )
            ],
            opts=keep,
        )
        return server

    # -- the clone's copy ------------------------------------------------------------------

    def _copy(self, name: str, args: DatabaseArgs) -> None:
        foundation = self._foundation
        settings = foundation.settings
        source = args.copy_of
        if not isinstance(source, AzurePostgresDatabase):
            raise pulumi.RunError("an Azure clone database must copy an Azure PostgreSQL database")
        if args.schema_version is not None and not args.rehearsal:
            raise pulumi.RunError("a clone's database is a copy: it is never migrated")
        archived = args.keep_baseline
        if args.rehearsal:
            copy_name = f"{settings.database_name}-rehearsal"
        elif archived and settings.deployment_id:
            copy_name = f"{settings.database_name}-clone-{settings.deployment_id}"
        else:
            copy_name = f"{settings.database_name}-clone"
        server = source.server
        assert server is not None
        database = dbforpostgresql.Database(
            f"{name}-copy",
            database_name=copy_name,
            server_name=server.name,
            resource_group_name=foundation.resource_group_name,
            charset="UTF8",
            collation="en_US.utf8",
            # Made once, in the server the primary had then: a later restore of the primary
            # (a new server) never replaces the copy under the clone.
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["serverName"], retain_on_delete=archived
            ),
        )
        self.access = PostgresCopy(
            f"{name}-access",
            host=source.host,
            source=source.database_name,
            destination=database.name,
            admin_login=settings.sql_admin_login,
            admin_password=settings.sql_admin_password,
            owner=settings.migration_login,
            read_only=args.read_only,
            attempts=settings.migration_attempts,
            pause_seconds=settings.migration_retry_seconds,
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["host", "source"],
                depends_on=[database, *source.operator_rules],
            ),
        )
        # Where the copy is, as the copy recorded it (a later primary generation moves nothing).
        self.host = self.access.host
        self.database_name = self.access.destination
        self.database_id = database.id
        self.archive = database.name if archived else None

    # -- what runs on the machine that runs the update -------------------------------------

    def _placeholders(self, version: str) -> pulumi.Output[dict[str, str]]:
        settings = self._foundation.settings
        return self.database_name.apply(
            partial(settings.placeholders, version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
        )

    def _filled(self, argv: tuple[str, ...], version: str) -> pulumi.Output[list[str]]:
        return self._placeholders(version).apply(lambda known: [fill(arg, known) for arg in argv])

    def _operator_environment(
        self, args: DatabaseArgs, version: str, login: tuple[str, pulumi.Output[str]]
    ) -> dict[str, pulumi.Input[str]]:
        """What `migrate` and `digest` get: the app spec's `env`, the database as a URL
        (`ZDD_DATABASE_CONNECTION`) and libpq's own variables, with the migration login."""
        known = self._placeholders(version)
        environment: dict[str, pulumi.Input[str]] = {
            key: known.apply(partial(fill, value))
            for key, value in self._foundation.settings.app.env.items()
        }
        user, password = login
        environment.update(
            {
                "ZDD_DATABASE_CONNECTION": self._url(user, password),
                "ZDD_DATABASE_NAME": self.database_name,
                "ZDD_SCHEMA_VERSION": version,
                "ZDD_DATABASE_GENERATION": str(args.generation),
                "PGHOST": self.host,
                "PGPORT": str(POSTGRES_PORT),
                "PGDATABASE": self.database_name,
                "PGUSER": user,
                "PGPASSWORD": password,  # a secret of the stack config
                "PGSSLMODE": "require",
            }
        )
        return environment

    def _restore_point(
        self,
        name: str,
        args: DatabaseArgs,
        version: str,
        login: tuple[str, pulumi.Output[str]],
        after: list[pulumi.Resource],
    ) -> RestorePoint:
        """The proof of the restore point (rule 8 of docs/design.md), as on Azure SQL: the
        point in time the driver took after the drain, and the digest read then from the
        server it was taken on (a restored generation is not it)."""
        settings = self._foundation.settings
        assert args.restore_point is not None
        restore_point_in_time(args.restore_point)
        taken_on = self.previous or self.server
        assert taken_on is not None
        return RestorePoint(
            f"{name}{RESTORE_POINT_SUFFIX}",
            restore_point=args.restore_point,
            database=taken_on.name,
            argv=self._filled(settings.app.digest, version),
            environment=self._operator_environment(args, version, login),
            attempts=settings.migration_attempts,
            pause_seconds=settings.migration_retry_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )

    def _url(self, user: pulumi.Input[str], password: pulumi.Input[str]) -> pulumi.Output[str]:
        return pulumi.Output.secret(
            pulumi.Output.all(self.host, self.database_name, user, password).apply(
                lambda values: database_url(*(str(v) for v in values))
            )
        )
