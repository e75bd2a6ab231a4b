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

from typing import Any
from urllib.parse import quote

import pulumi
from pulumi_azure_native import dbforpostgresql, network, web

from infra.azure.database import (
    AzureDatabaseBase,
    Generation,
    Login,
    Reached,
)
from infra.azure.postgres_copy import PostgresCopy
from infra.azure.settings import operator_network
from infra.components import DatabaseArgs
from zdd.phases import Instance

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


class AzurePostgresDatabase(AzureDatabaseBase):
    """One database of the site, the way `AzureDatabase` is for Azure SQL:

    - primary: server generation 1 (`createMode: Create`, protected) with the site's database,
      or a point-in-time restore of the generation before; the migration and the restore
      point's digest run against it from the operator's machine, as the migration login;
    - clone: a database `<databaseName>-clone` in the primary's server, copied, with the
      clone's own role (read-only unless the clone may write); a rehearsal's copy
      (`<databaseName>-rehearsal`) is migrated to the release rehearsed;
    - existing: an earlier generation that a compatible clone still serves, only pointed at.
    """

    kind = "zdd:azure:PostgresDatabase"
    connection_type = web.ConnectionStringType.POSTGRE_SQL
    administrator = "server administrator"
    host: pulumi.Output[str]

    def _declare(self, name: str, args: DatabaseArgs) -> None:
        self.previous: dbforpostgresql.Server | None = None
        self.server: dbforpostgresql.Server | None = None
        self.access: PostgresCopy | None = None
        self.operator_rules: list[pulumi.Resource] = []
        before_changes: list[pulumi.Resource] = []
        if args.existing:
            self._point_at_existing(args.generation)
        elif args.role is Instance.PRIMARY:
            before_changes += self._primary(name, args)
        else:
            self._copy(name, args)
            assert self.access is not None
            before_changes.append(self.access)
        before_changes += self.operator_rules
        self._run_app_commands(name, args, before_changes)
        # The site connects once the restore point and the migration are done, or, for the
        # clone, once its copy has its own role (and is read-only).
        self._connect_site(self.access, before_changes)

    def _point_at_existing(self, generation: int) -> None:
        """An earlier generation: declared by the update that made it; this only names it."""
        foundation = self._foundation
        existing = server_name(foundation.settings.name_prefix, generation)
        self.host = pulumi.Output.from_input(server_host(existing))
        self.database_name = pulumi.Output.from_input(foundation.settings.database_name)
        self.database_id = pulumi.Output.concat(
            foundation.resource_group.id,
            f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{existing}",
        )

    # -- the primary's servers -------------------------------------------------------------

    def _primary(self, name: str, args: DatabaseArgs) -> list[pulumi.Resource]:
        """This generation's server (after the one before where it is kept) and, in the first,
        the site's database: what nothing of the primary changes before."""
        foundation = self._foundation
        settings = foundation.settings
        if self._restores_previous(args):
            self.previous = self._server(name, Generation(args.generation - 1, None, kept=True))
        current = Generation(args.generation, args.restored_from, kept=False, after=self.previous)
        self.server = self._server(name, current)
        made: list[pulumi.Resource] = [self.server]
        if args.generation == 1:
            # A restored server brings the database with it; the first one gets it here.
            made.append(
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
        return made

    def _server(self, name: str, made: Generation) -> dbforpostgresql.Server:
        """One generation's server, with its operator firewall rules and private endpoint."""
        generation, kept = made.number, made.kept
        foundation = self._foundation
        settings = foundation.settings
        server = dbforpostgresql.Server(
            f"{name}-g{generation}",
            server_name=server_name(settings.name_prefix, generation),
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
            **self._made_from(made),
            opts=made.options(
                self,
                settings,
                how_made=["createMode", "sourceServerResourceId", "pointInTimeUTC"],
                ignored=["administratorLogin"],
            ),
        )
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=kept)
        rules = self._operator_firewall(f"{name}-g{generation}", server, keep)
        if not kept:
            self.operator_rules = rules
        self._private_endpoint(f"{name}-g{generation}", generation, server, keep)
        return server

    def _made_from(self, made: Generation) -> dict[str, Any]:
        """How a generation's server is made: created with the administrator (the first), or
        restored from the generation before at its restore point."""
        foundation = self._foundation
        settings = foundation.settings
        if made.number == 1:
            return {
                "create_mode": dbforpostgresql.CreateMode.CREATE,
                "administrator_login": settings.sql_admin_login,
                "administrator_login_password": settings.sql_admin_password,
            }
        # A restored server keeps the source's administrator and roles (the migration
        # login, the clone's role) with the data.
        return {
            "create_mode": dbforpostgresql.CreateMode.POINT_IN_TIME_RESTORE,
            "source_server_resource_id": pulumi.Output.concat(
                foundation.resource_group.id,
                "/providers/Microsoft.DBforPostgreSQL/flexibleServers/",
                server_name(settings.name_prefix, made.number - 1),
            ),
            "point_in_time_utc": made.point_in_time,
        }

    def _operator_firewall(
        self, logical: str, server: dbforpostgresql.Server, keep: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """A firewall rule per operator address: the migration, the digest and the copy run
        from there."""
        foundation = self._foundation
        rules: list[pulumi.Resource] = []
        for index, address in enumerate(foundation.settings.operator_ip_addresses):
            operator = operator_network(address)
            rules.append(
                dbforpostgresql.FirewallRule(
                    f"{logical}-operator-{index}",
                    firewall_rule_name=f"zdd-operator-{index}",
                    server_name=server.name,
                    resource_group_name=foundation.resource_group_name,
                    start_ip_address=str(operator.network_address),
                    end_ip_address=str(operator.broadcast_address),
                    opts=keep,
                )
            )
        return rules

    def _private_endpoint(
        self,
        logical: str,
        generation: int,
        server: dbforpostgresql.Server,
        keep: pulumi.ResourceOptions,
    ) -> None:
        """The server's private endpoint in the subnet `data`, named in the stack's private DNS
        zone: how the web apps reach it."""
        foundation = self._foundation
        settings = foundation.settings
        assert foundation.data_subnet is not None and foundation.postgres_zone is not None
        endpoint = network.PrivateEndpoint(
            f"{logical}-endpoint",
            private_endpoint_name=f"{server_name(settings.name_prefix, generation)}-pe",
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            subnet=network.SubnetArgs(id=foundation.data_subnet.id),
            private_link_service_connections=[
                network.PrivateLinkServiceConnectionArgs(
                    name=server_name(settings.name_prefix, generation),
                    private_link_service_id=server.id,
                    group_ids=[PRIVATE_LINK_GROUP],
                )
            ],
            opts=keep,
        )
        network.PrivateDnsZoneGroup(
            f"{logical}-endpoint-dns",
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

    # -- the clone's copy ------------------------------------------------------------------

    def _copy(self, name: str, args: DatabaseArgs) -> None:
        """The clone's copy: a database of the primary's server, filled by the copy, which also
        gives it the clone's own role (`self.access`)."""
        foundation = self._foundation
        settings = foundation.settings
        source = args.copy_of
        if not isinstance(source, AzurePostgresDatabase):
            raise pulumi.RunError("an Azure clone database must copy an Azure PostgreSQL database")
        if args.schema_version is not None and not args.rehearsal:
            raise pulumi.RunError("a clone's database is a copy: it is never migrated")
        archived = args.keep_baseline
        server = source.server
        assert server is not None
        database = dbforpostgresql.Database(
            f"{name}-copy",
            database_name=self._copy_name(args),
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
            owner=settings.migration_login,
            read_only=args.read_only,
            settings=settings,
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

    def _restore_point_taken_on(self) -> pulumi.Output[str]:
        taken_on = self.previous or self.server
        assert taken_on is not None
        return taken_on.name

    def _reached(self, login: Login, *, restore_point: bool) -> Reached:
        # The database as a URL, and libpq's own variables.
        user, password = login
        variables: dict[str, pulumi.Input[str]] = {
            "PGHOST": self.host,
            "PGPORT": str(POSTGRES_PORT),
            "PGDATABASE": self.database_name,
            "PGUSER": user,
            "PGPASSWORD": password,  # a secret of the stack config
            "PGSSLMODE": "require",
        }
        return Reached(self.database_name, self._login(user, password), variables)

    def _login(self, user: pulumi.Input[str], password: pulumi.Input[str]) -> pulumi.Output[str]:
        return pulumi.Output.secret(
            pulumi.Output.all(self.host, self.database_name, user, password).apply(
                lambda values: database_url(*(str(v) for v in values))
            )
        )
