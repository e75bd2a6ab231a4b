"""Azure target components: App Service web apps, Azure SQL databases, Front Door Standard.

One ComponentResource per concept of `infra.components` (AzureDatabase, AzureSite,
AzureFrontDoor), plus AzureFoundation for what every phase shares (resource group, App Service
plan, SQL server, Front Door profile). Logical names never depend on the phase, so a phase
change updates the primary's resources in place and never replaces them.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shlex
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlparse

import pulumi
from pulumi_azure_native import (
    authorization,
    cdn,
    frontdoor,
    managedidentity,
    network,
    resources,
    sql,
    web,
)
from pulumi_command import local

from infra.azure.restore_point import RestorePoint
from infra.components import DatabaseArgs, FrontDoorArgs, SiteArgs, SiteLike
from zdd.appspec import AppSpec, ReleaseKind, fill
from zdd.phases import DATABASE_MODE_SETTINGS, RESTORE_POINT_SUFFIX, DatabaseMode, Instance

# Front Door sends this header with the profile's id; the web apps accept nothing else.
FRONT_DOOR_ID_HEADER = "x-azure-fdid"
FRONT_DOOR_SERVICE_TAG = "AzureFrontDoor.Backend"
MIN_TLS_VERSION = "1.2"
# Front Door's WAF answers a blocked request with 200, 403, 405, 406 or 429 only (no 503, no
# extra header): 429 is the one clients treat as "come back later".
READ_ONLY_STATUS = 429
READ_ONLY_BODY = "The site is read-only for a few minutes during a deployment; retry in a minute."
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Built-in role that lets an identity pull images from a container registry.
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
# The web apps reach Azure SQL from this network (VNet integration + a Microsoft.Sql service
# endpoint), never through the "allow every Azure service" rule.
VNET_RANGE = "10.80.0.0/16"
SUBNETS = {"apps": "10.80.0.0/24", "clone-apps": "10.80.1.0/24"}


@dataclass(frozen=True)
class AzureSettings:
    """The Azure keys of the stack config (see `stacks/Pulumi.azure-example.yaml`)."""

    location: str
    resource_group_name: str
    name_prefix: str
    # The site: `releases` a container image or package URL template (zdd.appspec).
    app: AppSpec
    # The runtime stack of a package (a container image needs none).
    linux_runtime: str | None
    app_service_sku: str
    clone_own_plan: bool
    sql_admin_login: str
    sql_admin_password: pulumi.Output[str]
    sql_entra_admin_login: str | None
    sql_entra_admin_object_id: str | None
    database_name: str
    database_sku: str
    backup_retention_days: int
    warmup_command: str | None
    smoke_command: str | None
    # Addresses (the machine that runs `zdd`) allowed to reach the web apps and the SQL server
    # directly, for the driver's health checks and the migration hook.
    operator_ip_addresses: tuple[str, ...] = ()
    connection_string_name: str = "EPiServerDB"
    # The deployment in progress (`zdd:deploymentId`): names a read-write clone's archive.
    deployment_id: str | None = None
    # The port the container listens on (`WEBSITES_PORT`).
    container_port: int = 8000
    # A private registry (resource id) the web apps pull from with a managed identity.
    container_registry_id: str | None = None
    # The visitors' host name: sent to both sites as their Host header.
    custom_domain: str | None = None
    # Opt-in to the 0.0.0.0 rule ("every Azure service", any customer's); the policy reports it.
    allow_azure_services: bool = False
    # The migration's and the digest's own SQL login (a database user with DDL rights, never
    # the administrator).
    migration_login: str | None = None
    migration_password: pulumi.Output[str] | None = None
    # A firewall rule takes up to five minutes to apply: the migration retries its connection.
    migration_attempts: int = 6
    migration_retry_seconds: int = 60
    # Pulumi's create timeout for a database copy or point-in-time restore.
    database_create_timeout: str = "12h"
    # The driver's switch and drain gates (exported for zdd/azure.py).
    switch_settle_seconds: int = 240
    drain_quiet_seconds: int = 300
    switch_timeout_seconds: int = 2700

    @property
    def runs_from_package(self) -> bool:
        return self.app.release_kind is ReleaseKind.PACKAGE

    def placeholders(
        self, version: str, instance: Instance, mode: DatabaseMode, database: str
    ) -> dict[str, str]:
        """The values of the app spec's placeholders for one web app or its database."""
        return {
            "port": str(self.container_port),
            "database": database,
            "database_mode": str(mode),
            "instance": str(instance),
            "version": version,
        }


def restore_point_in_time(restore_point: str) -> str:
    """The recorded restore point as the ISO-8601 UTC timestamp Azure SQL restores to."""
    try:
        moment = datetime.fromisoformat(restore_point)
    except ValueError:
        raise pulumi.RunError(
            f"restore point {restore_point!r} is not a point in time: on Azure it is an "
            "ISO-8601 timestamp such as 2025-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _network(address: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(address, strict=False)


class AzureFoundation(pulumi.ComponentResource):
    """What every phase shares. The resource group and the SQL server hold the data: protected."""

    def __init__(
        self, name: str, settings: AzureSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("zdd:azure:Foundation", name, None, opts)
        self.settings = settings
        prefix = settings.name_prefix
        child = pulumi.ResourceOptions(parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=True)
        self.resource_group = resources.ResourceGroup(
            f"{name}-rg",
            resource_group_name=settings.resource_group_name,
            location=settings.location,
            tags={"zdd-stack": pulumi.get_stack()},
            opts=keep,
        )
        self.resource_group_name: pulumi.Output[str] = self.resource_group.name
        self.plan = app_service_plan(f"{name}-plan", f"{prefix}-plan", self, child)
        administrators = None
        if settings.sql_entra_admin_login and settings.sql_entra_admin_object_id:
            administrators = sql.ServerExternalAdministratorArgs(
                administrator_type="ActiveDirectory",
                login=settings.sql_entra_admin_login,
                sid=settings.sql_entra_admin_object_id,
                azure_ad_only_authentication=False,
            )
        self.sql_server = sql.Server(
            f"{name}-sql",
            server_name=f"{prefix}-sql",
            resource_group_name=self.resource_group_name,
            location=settings.location,
            version="12.0",
            administrator_login=settings.sql_admin_login,
            administrator_login_password=settings.sql_admin_password,
            administrators=administrators,
            minimal_tls_version=MIN_TLS_VERSION,
            public_network_access="Enabled",
            opts=keep,
        )
        # The web apps reach Azure SQL from their own subnet (service endpoint).
        self.vnet = network.VirtualNetwork(
            f"{name}-vnet",
            virtual_network_name=f"{prefix}-vnet",
            resource_group_name=self.resource_group_name,
            location=settings.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[VNET_RANGE]),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["subnets"]),
        )
        self.apps_subnet = app_subnet(f"{name}-apps-subnet", "apps", self, child)
        self.firewall_rules: list[pulumi.Resource] = []
        if settings.allow_azure_services:
            self.firewall_rules.append(
                sql.FirewallRule(
                    f"{name}-sql-azure-services",
                    firewall_rule_name="AllowAllWindowsAzureIps",
                    server_name=self.sql_server.name,
                    resource_group_name=self.resource_group_name,
                    start_ip_address="0.0.0.0",
                    end_ip_address="0.0.0.0",
                    opts=child,
                )
            )
        for index, address in enumerate(settings.operator_ip_addresses):
            operator = _network(address)
            self.firewall_rules.append(
                sql.FirewallRule(
                    f"{name}-sql-operator-{index}",
                    firewall_rule_name=f"zdd-operator-{index}",
                    server_name=self.sql_server.name,
                    resource_group_name=self.resource_group_name,
                    start_ip_address=str(operator.network_address),
                    end_ip_address=str(operator.broadcast_address),
                    opts=child,
                )
            )
        # The identity the web apps pull their images with; it holds AcrPull before any app
        # exists, so the first pull already works.
        self.pull_identity: managedidentity.UserAssignedIdentity | None = None
        self.pull_grant: authorization.RoleAssignment | None = None
        if settings.container_registry_id:
            registry = settings.container_registry_id
            self.pull_identity = managedidentity.UserAssignedIdentity(
                f"{name}-pull-identity",
                resource_name_=f"{prefix}-pull",
                resource_group_name=self.resource_group_name,
                location=settings.location,
                opts=child,
            )
            subscription = registry.split("/resourceGroups/")[0]
            self.pull_grant = authorization.RoleAssignment(
                f"{name}-acr-pull",
                role_assignment_name=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}{registry}")),
                principal_id=self.pull_identity.principal_id,
                principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                role_definition_id=(
                    f"{subscription}/providers/Microsoft.Authorization/roleDefinitions/"
                    f"{ACR_PULL_ROLE}"
                ),
                scope=registry,
                opts=child,
            )
        self.profile = cdn.Profile(
            f"{name}-frontdoor",
            profile_name=f"{prefix}-fd",
            resource_group_name=self.resource_group_name,
            location="global",
            sku=cdn.SkuArgs(name=cdn.SkuName.STANDARD_AZURE_FRONT_DOOR),
            origin_response_timeout_seconds=60,
            opts=child,
        )
        # The value Front Door sends in X-Azure-FDID.
        self.front_door_id: pulumi.Output[str] = self.profile.front_door_id
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "sql_server": self.sql_server.fully_qualified_domain_name,
                "front_door_id": self.front_door_id,
            }
        )


def app_subnet(
    logical: str, subnet: str, foundation: AzureFoundation, opts: pulumi.ResourceOptions
) -> network.Subnet:
    """A subnet for one App Service plan's VNet integration, with a Microsoft.Sql endpoint and
    its SQL virtual network rule (one plan per subnet: the clone's own plan gets its own)."""
    created = network.Subnet(
        logical,
        subnet_name=subnet,
        virtual_network_name=foundation.vnet.name,
        resource_group_name=foundation.resource_group_name,
        address_prefix=SUBNETS[subnet],
        delegations=[network.DelegationArgs(name="web", service_name="Microsoft.Web/serverFarms")],
        service_endpoints=[network.ServiceEndpointPropertiesFormatArgs(service="Microsoft.Sql")],
        opts=opts,
    )
    sql.VirtualNetworkRule(
        f"{logical}-sql",
        virtual_network_rule_name=f"zdd-{subnet}",
        server_name=foundation.sql_server.name,
        resource_group_name=foundation.resource_group_name,
        virtual_network_subnet_id=created.id,
        opts=opts,
    )
    return created


def app_service_plan(
    logical: str, azure_name: str, foundation: AzureFoundation, opts: pulumi.ResourceOptions
) -> web.AppServicePlan:
    settings = foundation.settings
    return web.AppServicePlan(
        logical,
        name=azure_name,
        resource_group_name=foundation.resource_group_name,
        location=settings.location,
        kind="linux",
        reserved=True,  # Linux
        sku=web.SkuDescriptionArgs(name=settings.app_service_sku),
        opts=opts,
    )


class AzureDatabase(pulumi.ComponentResource):
    """The primary database (one Azure SQL database per generation) or the clone's copy.

    - generation 1: a new database, protected, with short-term backup retention;
    - generation N > 1 (rollback with database): a point-in-time restore of generation N-1 at
      `restored_from`, protected. Its inputs depend on nothing but N and `restored_from`, so it
      is the same database in every later phase and deployment. While the deployment that
      restored it goes on (its restore point is `restored_from`), generation N-1 stays declared,
      unprotected but retained on delete: when the deployment ends Pulumi forgets it and never
      drops it;
    - clone: `createMode: Copy` of the primary, never migrated.
    """

    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:Database", name, None, opts)
        self._foundation = foundation
        settings = foundation.settings
        self.previous: sql.Database | None = None
        self.migration: local.Command | None = None
        if args.role is Instance.PRIMARY:
            if args.generation > 1 and args.restored_from is None:
                raise pulumi.RunError(
                    f"database generation {args.generation} needs the restore point it was "
                    "restored from (zdd:restoredFrom)"
                )
            restoring = args.generation > 1 and args.restore_point == args.restored_from
            if restoring:
                self.previous = self._generation(name, args.generation - 1, None, kept=True)
            self.database = self._generation(
                name, args.generation, args.restored_from, kept=False, after=self.previous
            )
        else:
            if args.schema_version is not None:
                raise pulumi.RunError("a clone's database is a copy: it is never migrated")
            source = args.copy_of
            if not isinstance(source, AzureDatabase):
                raise pulumi.RunError("an Azure clone database must copy an Azure database")
            # A read-write clone's database takes writes the primary never sees: it is kept
            # (retained on delete, under its deployment's name) as the archive of those writes.
            archived = args.keep_baseline
            clone_name = (
                f"{settings.database_name}-clone-{settings.deployment_id}"
                if archived and settings.deployment_id
                else f"{settings.database_name}-clone"
            )
            self.database = sql.Database(
                f"{name}-copy",
                database_name=clone_name,
                server_name=foundation.sql_server.name,
                resource_group_name=foundation.resource_group_name,
                location=settings.location,
                sku=sql.SkuArgs(name=settings.database_sku),
                create_mode=sql.CreateMode.COPY,
                source_database_id=source.database_id,
                tags={"zdd-role": str(Instance.CLONE)},
                # Copied once, when the clone is created: a later change of the primary's
                # database (a rollback with database) never replaces the copy under the clone.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    ignore_changes=["sourceDatabaseId"],
                    retain_on_delete=archived,
                    custom_timeouts=_copy_timeouts(settings),
                ),
            )
        self.database_name: pulumi.Output[str] = self.database.name
        self.database_id: pulumi.Output[str] = self.database.id
        self.archive: pulumi.Output[str] | None = self.database.name if args.keep_baseline else None
        self.copy_digest: pulumi.Output[str] | None = None
        self.restore_point: RestorePoint | None = None
        self.restore_point_taken: pulumi.Output[dict[str, Any]] | None = None
        # Nothing changes the primary database (its migration) nor the primary site (which
        # connects through `connection`) before these.
        before_changes: list[pulumi.Resource] = [self.database, *foundation.firewall_rules]
        app = settings.app
        schema = args.schema_version
        if args.role is Instance.PRIMARY and schema and (app.migrate or app.digest):
            login, password = settings.migration_login, settings.migration_password
            if login is None or password is None:
                raise pulumi.RunError(
                    "the app spec's `migrate` and `digest` need zdd:migrationLogin and "
                    "zdd:migrationPassword (secret): they never run as the SQL administrator "
                    "(docs/azure.md)"
                )
            if args.restore_point and app.digest:
                # The database the point was taken on: a restored generation is not it.
                self.restore_point = self._restore_point(
                    name,
                    args,
                    schema,
                    self.previous or self.database,
                    (login, password),
                    before_changes,
                )
                before_changes.append(self.restore_point)
                point = self.restore_point
                self.restore_point_taken = pulumi.Output.all(
                    restore_point=point.restore_point, taken_at=point.taken_at, digest=point.digest
                )
            if app.migrate:
                self.migration = local.Command(
                    f"{name}-migration",
                    create=self._filled(app.migrate, schema, self.database).apply(
                        lambda argv: retrying(
                            shlex.join(argv),
                            settings.migration_attempts,
                            settings.migration_retry_seconds,
                        )
                    ),
                    environment=self._operator_environment(
                        args, schema, self.database, (login, password)
                    ),
                    # Runs again for a new schema version or a new (restored) generation only.
                    triggers=[schema, args.generation],
                    # It connects from the machine that runs `pulumi up`: through its firewall
                    # rule, once the restore point is recorded.
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(before_changes)),
                )
                before_changes.append(self.migration)
        # The site connects once the restore point and the migration are done.
        connection = pulumi.Output.all(
            self._connection_string(settings.sql_admin_login, settings.sql_admin_password),
            *(resource.urn for resource in before_changes[1:]),
        ).apply(lambda values: str(values[0]))
        self.connection: pulumi.Output[str] = pulumi.Output.secret(connection)
        self.register_outputs(
            {"database_name": self.database_name, "database_id": self.database_id}
        )

    def _generation(
        self,
        name: str,
        generation: int,
        restored_from: str | None,
        *,
        kept: bool,
        after: pulumi.Resource | None = None,
    ) -> sql.Database:
        foundation = self._foundation
        settings = foundation.settings
        source_id: pulumi.Output[str] | None = None
        point_in_time: str | None = None
        if generation == 1:
            create_mode = sql.CreateMode.DEFAULT
        else:
            create_mode = sql.CreateMode.POINT_IN_TIME_RESTORE
            # The previous generation's id, known without declaring it (it may be long gone).
            source_id = pulumi.Output.concat(
                foundation.sql_server.id,
                f"/databases/{settings.database_name}-g{generation - 1}",
            )
            point_in_time = restore_point_in_time(restored_from) if restored_from else None
        options = pulumi.ResourceOptions(
            parent=self,
            protect=not kept,
            retain_on_delete=kept,
            # A kept generation exists already: how it was made is history, never a reason to
            # replace it.
            ignore_changes=["createMode", "sourceDatabaseId", "restorePointInTime"]
            if kept
            else None,
            depends_on=[after] if after else None,
            custom_timeouts=_copy_timeouts(settings) if generation > 1 else None,
        )
        database = sql.Database(
            f"{name}-g{generation}",
            database_name=f"{settings.database_name}-g{generation}",
            server_name=foundation.sql_server.name,
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            sku=sql.SkuArgs(name=settings.database_sku),
            create_mode=create_mode,
            source_database_id=source_id,
            restore_point_in_time=point_in_time,
            tags={"zdd-role": str(Instance.PRIMARY), "zdd-generation": str(generation)},
            opts=options,
        )
        sql.BackupShortTermRetentionPolicy(
            f"{name}-g{generation}-retention",
            policy_name="default",
            database_name=database.name,
            server_name=foundation.sql_server.name,
            resource_group_name=foundation.resource_group_name,
            retention_days=settings.backup_retention_days,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=kept),
        )
        return database

    def _placeholders(self, version: str, database: sql.Database) -> pulumi.Output[dict[str, str]]:
        """The app spec's placeholders for a command run on the primary database."""
        settings = self._foundation.settings
        return database.name.apply(
            partial(settings.placeholders, version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
        )

    def _filled(
        self, argv: tuple[str, ...], version: str, database: sql.Database
    ) -> pulumi.Output[list[str]]:
        """An app spec command for the primary database, its placeholders filled."""
        return self._placeholders(version, database).apply(
            lambda known: [fill(arg, known) for arg in argv]
        )

    def _operator_environment(
        self,
        args: DatabaseArgs,
        version: str,
        database: sql.Database,
        login: tuple[str, pulumi.Output[str]],
    ) -> dict[str, pulumi.Input[str]]:
        """What `migrate` and `digest` get, on the machine that runs the update: the app
        spec's `env` and the database, reached with the migration login."""
        known = self._placeholders(version, database)
        environment: dict[str, pulumi.Input[str]] = {
            key: known.apply(partial(fill, value))
            for key, value in self._foundation.settings.app.env.items()
        }
        environment.update(
            {
                "ZDD_DATABASE_CONNECTION": self._connection_string(*login, database),
                "ZDD_DATABASE_NAME": database.name,
                "ZDD_SCHEMA_VERSION": version,
                "ZDD_DATABASE_GENERATION": str(args.generation),
            }
        )
        return environment

    def _restore_point(
        self,
        name: str,
        args: DatabaseArgs,
        version: str,
        database: sql.Database,
        login: tuple[str, pulumi.Output[str]],
        after: list[pulumi.Resource],
    ) -> RestorePoint:
        """The proof of the restore point (rule 8 of docs/design.md): the point in time the
        driver took on Azure's clock after the drain, and the content digest the spec's `digest`
        reads then."""
        settings = self._foundation.settings
        assert args.restore_point is not None
        restore_point_in_time(args.restore_point)  # a point in time, or one clear line
        return RestorePoint(
            f"{name}{RESTORE_POINT_SUFFIX}",
            restore_point=args.restore_point,
            database=database.name,
            argv=self._filled(settings.app.digest, version, database),
            environment=self._operator_environment(args, version, database, login),
            attempts=settings.migration_attempts,
            pause_seconds=settings.migration_retry_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )

    def _connection_string(
        self, login: str, password: pulumi.Output[str], database: sql.Database | None = None
    ) -> pulumi.Output[str]:
        foundation = self._foundation

        def render(values: list[str]) -> str:
            host, database, secret = values
            return (
                f"Server=tcp:{host},1433;Initial Catalog={database};"
                f"User ID={login};Password={secret};"
                "Encrypt=True;TrustServerCertificate=False;Connection Timeout=30;"
            )

        return pulumi.Output.secret(
            pulumi.Output.all(
                foundation.sql_server.fully_qualified_domain_name,
                (database or self.database).name,
                password,
            ).apply(render)
        )


def _copy_timeouts(settings: AzureSettings) -> pulumi.CustomTimeouts:
    """A copy or a point-in-time restore takes as long as the data (Azure: "most database
    restores finish in less than 12 hours"); Pulumi's default would give up after 2."""
    return pulumi.CustomTimeouts(create=settings.database_create_timeout)


def retrying(command: str, attempts: int, pause_seconds: int) -> str:
    """`command` run up to `attempts` times, `pause_seconds` apart (a new firewall rule takes
    minutes to apply). The migration must be safe to run again: Alembic revisions on SQL
    Server are transactional, and one that succeeded is not run a second time."""
    return (
        f"for attempt in $(seq 1 {attempts}); do sh -c {shlex.quote(command)} && exit 0; "
        f'[ "$attempt" -lt {attempts} ] && sleep {pause_seconds}; done; exit 1'
    )


class AzureSite(pulumi.ComponentResource):
    """A Linux web app on the shared plan (the clone on its own plan with zdd:cloneOwnPlan)."""

    def __init__(
        self,
        name: str,
        args: SiteArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:Site", name, None, opts)
        settings = foundation.settings
        spec = args.spec
        instance = str(spec.instance)
        mode = str(spec.database_mode)
        child = pulumi.ResourceOptions(parent=self)
        plan_id = foundation.plan.id
        subnet_id = foundation.apps_subnet.id
        self.plan: web.AppServicePlan | None = None
        if spec.instance is Instance.CLONE and settings.clone_own_plan:
            self.plan = app_service_plan(
                f"{name}-plan", f"{settings.name_prefix}-{instance}-plan", foundation, child
            )
            plan_id = self.plan.id
            subnet_id = app_subnet(f"{name}-subnet", "clone-apps", foundation, child).id
        code = settings.app.release(spec.version)
        placeholders = args.database.database_name.apply(
            lambda database: settings.placeholders(
                spec.version, spec.instance, spec.database_mode, database
            )
        )
        app_settings = [
            web.NameValuePairArgs(name="ZDD_VERSION", value=spec.version),
            web.NameValuePairArgs(name="ZDD_INSTANCE", value=instance),
            *(web.NameValuePairArgs(name=key, value=mode) for key in DATABASE_MODE_SETTINGS),
            web.NameValuePairArgs(name="ZDD_DATABASE_NAME", value=args.database.database_name),
        ]
        taken = {pair.name for pair in app_settings} | {"WEBSITE_RUN_FROM_PACKAGE", "WEBSITES_PORT"}
        for key, value in settings.app.env.items():
            if key in taken:
                raise pulumi.RunError(
                    f"app spec field `env`: {key} is set by the platform; rename it"
                )
            app_settings.append(
                web.NameValuePairArgs(name=key, value=placeholders.apply(partial(fill, value)))
            )
        # The spec's `start`, or the image's (or the runtime's) own start command.
        startup: pulumi.Output[str] | None = (
            placeholders.apply(
                lambda known: shlex.join(fill(arg, known) for arg in settings.app.start)
            )
            if settings.app.start
            else None
        )
        identity = None
        pull_with: pulumi.Output[str] | None = None
        if settings.runs_from_package:
            app_settings.append(web.NameValuePairArgs(name="WEBSITE_RUN_FROM_PACKAGE", value=code))
            linux_fx_version = settings.linux_runtime
        else:
            app_settings += [
                web.NameValuePairArgs(name="WEBSITES_ENABLE_APP_SERVICE_STORAGE", value="false"),
                web.NameValuePairArgs(name="WEBSITES_PORT", value=str(settings.container_port)),
            ]
            linux_fx_version = f"DOCKER|{code}"
            if foundation.pull_identity is not None:
                identity = web.ManagedServiceIdentityArgs(
                    type=web.ManagedServiceIdentityType.USER_ASSIGNED,
                    user_assigned_identities=[foundation.pull_identity.id],
                )
                pull_with = foundation.pull_identity.client_id
        restrictions = [
            web.IpSecurityRestrictionArgs(
                name="front-door",
                description="Only this stack's Front Door profile",
                action="Allow",
                priority=100,
                tag=web.IpFilterTag.SERVICE_TAG,
                ip_address=FRONT_DOOR_SERVICE_TAG,
                headers={FRONT_DOOR_ID_HEADER: [foundation.front_door_id]},
            ),
            *(
                web.IpSecurityRestrictionArgs(
                    name=f"operator-{index}",
                    description="The machine that runs zdd (health checks)",
                    action="Allow",
                    priority=200 + index,
                    tag=web.IpFilterTag.DEFAULT,
                    ip_address=str(_network(address)),
                )
                for index, address in enumerate(settings.operator_ip_addresses)
            ),
        ]
        after_grant = [foundation.pull_grant] if foundation.pull_grant else []
        self.app = web.WebApp(
            f"{name}-app",
            name=f"{settings.name_prefix}-{instance}",
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            server_farm_id=plan_id,
            kind="app,linux",
            reserved=True,
            https_only=True,
            client_affinity_enabled=False,
            identity=identity,
            virtual_network_subnet_id=subnet_id,
            site_config=web.SiteConfigArgs(
                acr_use_managed_identity_creds=True if pull_with else None,
                acr_user_managed_identity_id=pull_with,
                # SQL is reached through the subnet's service endpoint.
                vnet_route_all_enabled=True,
                always_on=True,
                health_check_path=settings.app.health.path,
                min_tls_version=MIN_TLS_VERSION,
                scm_min_tls_version=MIN_TLS_VERSION,
                ftps_state=web.FtpsState.DISABLED,
                http20_enabled=True,
                linux_fx_version=linux_fx_version,
                app_command_line=startup,
                app_settings=app_settings,
                connection_strings=[
                    web.ConnStringInfoArgs(
                        name=settings.connection_string_name,
                        connection_string=args.database.connection,
                        type=web.ConnectionStringType.SQL_AZURE,
                    )
                ],
                ip_security_restrictions=restrictions,
                ip_security_restrictions_default_action=web.DefaultAction.DENY,
            ),
            # Visible in a preview even though the site config holds a secret.
            tags={"zdd-instance": instance, "zdd-version": spec.version, "zdd-database-mode": mode},
            opts=pulumi.ResourceOptions(parent=self, depends_on=after_grant),
        )
        if settings.custom_domain:
            # Both sites answer to the visitors' host (Front Door sends it as Host). App Service
            # checks the domain's `asuid` TXT record (docs/azure.md, first deployment).
            web.WebAppHostNameBinding(
                f"{name}-host-name",
                name=self.app.name,
                host_name=settings.custom_domain,
                resource_group_name=foundation.resource_group_name,
                host_name_type=web.HostNameType.VERIFIED,
                opts=child,
            )
        self.host_name: pulumi.Output[str] = self.app.default_host_name
        self.url: pulumi.Output[str] = pulumi.Output.concat("https://", self.host_name)
        self.hooks: list[local.Command] = []
        environment: dict[str, pulumi.Input[str]] = {
            "ZDD_SITE_URL": self.url,
            "ZDD_VERSION": spec.version,
            "ZDD_INSTANCE": instance,
            "ZDD_DATABASE_MODE": mode,
        }
        after: list[pulumi.Resource] = [self.app]
        for hook, command in (
            ("warmup", settings.warmup_command),
            ("smoke", settings.smoke_command),
        ):
            if command:
                self.hooks.append(
                    local.Command(
                        f"{name}-{hook}",
                        create=command,
                        environment=environment,
                        triggers=[spec.version, mode],
                        opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
                    )
                )
                after.append(self.hooks[-1])
        self.register_outputs({"url": self.url})


def _host_of(site: SiteLike) -> pulumi.Output[str]:
    return site.url.apply(lambda url: urlparse(url).hostname or url)


class AzureFrontDoor(pulumi.ComponentResource):
    """Front Door Standard: one single-origin origin group per site, and two endpoints.

    - The public route points at the origin group of the site that has the traffic: moving the
      traffic is one change (the route's `originGroup`), whose `deploymentStatus` the driver
      polls until every edge has it.
    - The preview route always points at the primary's group; a WAF policy lets only the
      operator addresses through (`zdd:operatorIpAddresses`), so the preview endpoint is no
      way into the read-write primary for anyone else.
    - While a read-only clone may hold traffic, the public WAF policy refuses every request
      that is not GET, HEAD or OPTIONS at the edge (status 429, see `READ_ONLY_STATUS`).
    """

    def __init__(
        self,
        name: str,
        args: FrontDoorArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:azure:FrontDoor", name, None, opts)
        if args.traffic not in args.origins or Instance.PRIMARY not in args.origins:
            raise pulumi.RunError(f"the front door has no {args.traffic} origin to send traffic to")
        self._foundation = foundation
        settings = foundation.settings
        prefix = settings.name_prefix
        self.public_endpoint = self._endpoint(f"{name}-public-endpoint", f"{prefix}-public")
        self.preview_endpoint = self._endpoint(f"{name}-preview-endpoint", f"{prefix}-preview")
        self.groups: dict[Instance, cdn.AFDOriginGroup] = {}
        self.origins: dict[Instance, cdn.AFDOrigin] = {}
        for role, site in args.origins.items():
            self.groups[role] = self._origin_group(f"{name}-{role}-origins", str(role))
            self.origins[role] = self._origin(f"{name}-{role}", self.groups[role], role, site)
        self.custom_domain: cdn.AFDCustomDomain | None = None
        if settings.custom_domain:
            self.custom_domain = cdn.AFDCustomDomain(
                f"{name}-custom-domain",
                custom_domain_name=settings.custom_domain.replace(".", "-"),
                host_name=settings.custom_domain,
                profile_name=foundation.profile.name,
                resource_group_name=foundation.resource_group_name,
                tls_settings=cdn.AFDDomainHttpsParametersArgs(
                    certificate_type=cdn.AfdCertificateType.MANAGED_CERTIFICATE,
                    minimum_tls_version=cdn.AfdMinimumTlsVersion.TLS12,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        public_domains = [self.public_endpoint.id]
        if self.custom_domain is not None:
            public_domains.append(self.custom_domain.id)
        self.public_waf = self._waf_policy(
            f"{name}-public-waf",
            f"{prefix}public",
            [_read_only_rule(enabled=args.refuse_writes)],
            public_domains,
        )
        self.preview_waf = self._waf_policy(
            f"{name}-preview-waf",
            f"{prefix}preview",
            [_operator_only_rule(settings.operator_ip_addresses)],
            [self.preview_endpoint.id],
        )
        # The switch: writes are refused at the edge before the route moves to a read-only
        # clone (the route waits for the WAF policy).
        self.public_route = self._route(
            f"{name}-public-route",
            self.public_endpoint,
            self.groups[args.traffic],
            [*self.origins.values(), *self.public_waf],
            custom_domain=self.custom_domain,
        )
        self.preview_route = self._route(
            f"{name}-preview-route",
            self.preview_endpoint,
            self.groups[Instance.PRIMARY],
            [self.origins[Instance.PRIMARY], *self.preview_waf],
        )
        self.public_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.public_endpoint.host_name
        )
        self.preview_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.preview_endpoint.host_name
        )
        self.front_door_id: pulumi.Output[str] = foundation.front_door_id
        # What the driver's Azure gates read (zdd/azure.py): which resource to poll and count.
        self.driver_outputs: dict[str, pulumi.Input[Any]] = {
            "profile_id": foundation.profile.id,
            "public_route_id": self.public_route.id,
            "origin_hosts": {str(role): _host_of(site) for role, site in args.origins.items()},
            "settle_seconds": settings.switch_settle_seconds,
            "quiet_seconds": settings.drain_quiet_seconds,
            "switch_timeout_seconds": settings.switch_timeout_seconds,
        }
        self.register_outputs({"public_url": self.public_url, "preview_url": self.preview_url})

    def _endpoint(self, logical: str, azure_name: str) -> cdn.AFDEndpoint:
        return cdn.AFDEndpoint(
            logical,
            endpoint_name=azure_name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            location="global",
            enabled_state=cdn.EnabledState.ENABLED,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin_group(self, logical: str, azure_name: str) -> cdn.AFDOriginGroup:
        # One origin per group: Front Door's health probes would only add requests to the
        # origin (and to the drain evidence) without any choice to make, so they are off.
        return cdn.AFDOriginGroup(
            logical,
            origin_group_name=azure_name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            load_balancing_settings=cdn.LoadBalancingSettingsParametersArgs(
                sample_size=4, successful_samples_required=3, additional_latency_in_milliseconds=50
            ),
            session_affinity_state=cdn.EnabledState.DISABLED,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin(
        self, logical: str, group: cdn.AFDOriginGroup, role: Instance, site: SiteLike
    ) -> cdn.AFDOrigin:
        host = _host_of(site)
        # With a custom domain, both sites see the visitors' host (links, cookies, site
        # mapping); without one, the app's own name (App Service routes by it).
        host_header = self._foundation.settings.custom_domain or host
        return cdn.AFDOrigin(
            logical,
            origin_name=str(role),
            origin_group_name=group.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            host_name=host,
            origin_host_header=host_header,
            http_port=80,
            https_port=443,
            priority=1,
            weight=1000,
            enabled_state=cdn.EnabledState.ENABLED,
            enforce_certificate_name_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _waf_policy(
        self,
        logical: str,
        azure_name: str,
        rules: list[frontdoor.CustomRuleArgs],
        domains: list[pulumi.Output[str]],
    ) -> tuple[frontdoor.Policy, cdn.SecurityPolicy]:
        foundation = self._foundation
        policy = frontdoor.Policy(
            logical,
            # WAF policy names are letters and digits only.
            policy_name=re.sub(r"[^A-Za-z0-9]", "", azure_name),
            resource_group_name=foundation.resource_group_name,
            location="Global",
            sku=frontdoor.SkuArgs(name=frontdoor.SkuName.STANDARD_AZURE_FRONT_DOOR),
            policy_settings=frontdoor.PolicySettingsArgs(
                enabled_state=frontdoor.PolicyEnabledState.ENABLED,
                mode=frontdoor.PolicyMode.PREVENTION,
                custom_block_response_status_code=READ_ONLY_STATUS,
                custom_block_response_body=base64.b64encode(READ_ONLY_BODY.encode()).decode(),
            ),
            custom_rules=frontdoor.CustomRuleListArgs(rules=rules),
            opts=pulumi.ResourceOptions(parent=self),
        )
        association = cdn.SecurityPolicy(
            f"{logical}-association",
            security_policy_name=re.sub(r"[^A-Za-z0-9-]", "", azure_name),
            profile_name=foundation.profile.name,
            resource_group_name=foundation.resource_group_name,
            parameters=cdn.SecurityPolicyWebApplicationFirewallParametersArgs(
                type="WebApplicationFirewall",
                waf_policy=cdn.ResourceReferenceArgs(id=policy.id),
                associations=[
                    cdn.SecurityPolicyWebApplicationFirewallAssociationArgs(
                        domains=[cdn.ActivatedResourceReferenceArgs(id=d) for d in domains],
                        patterns_to_match=["/*"],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return policy, association

    def _route(
        self,
        logical: str,
        endpoint: cdn.AFDEndpoint,
        group: cdn.AFDOriginGroup,
        after: list[pulumi.Resource],
        custom_domain: cdn.AFDCustomDomain | None = None,
    ) -> cdn.Route:
        return cdn.Route(
            logical,
            route_name="site",
            endpoint_name=endpoint.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            origin_group=cdn.ResourceReferenceArgs(id=group.id),
            custom_domains=[cdn.ActivatedResourceReferenceArgs(id=custom_domain.id)]
            if custom_domain
            else None,
            supported_protocols=[cdn.AFDEndpointProtocols.HTTP, cdn.AFDEndpointProtocols.HTTPS],
            patterns_to_match=["/*"],
            forwarding_protocol=cdn.ForwardingProtocol.HTTPS_ONLY,
            https_redirect=cdn.HttpsRedirect.ENABLED,
            link_to_default_domain=cdn.LinkToDefaultDomain.ENABLED,
            enabled_state=cdn.EnabledState.ENABLED,
            # A route needs an origin in its group.
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )


def _read_only_rule(*, enabled: bool) -> frontdoor.CustomRuleArgs:
    """Refuse writes at the edge: anything but GET, HEAD and OPTIONS is blocked."""
    return frontdoor.CustomRuleArgs(
        name="readonly",
        priority=10,
        rule_type=frontdoor.RuleType.MATCH_RULE,
        action=frontdoor.ActionType.BLOCK,
        enabled_state=frontdoor.CustomRuleEnabledState.ENABLED
        if enabled
        else frontdoor.CustomRuleEnabledState.DISABLED,
        match_conditions=[
            frontdoor.MatchConditionArgs(
                match_variable=frontdoor.MatchVariable.REQUEST_METHOD,
                operator=frontdoor.Operator.EQUAL,
                negate_condition=True,
                match_value=list(SAFE_METHODS),
            )
        ],
    )


def _operator_only_rule(addresses: tuple[str, ...]) -> frontdoor.CustomRuleArgs:
    """Block every client whose TCP peer is not an operator address (SocketAddr, not the
    spoofable X-Forwarded-For that RemoteAddr reads)."""
    return frontdoor.CustomRuleArgs(
        name="operatorsonly",
        priority=10,
        rule_type=frontdoor.RuleType.MATCH_RULE,
        action=frontdoor.ActionType.BLOCK,
        enabled_state=frontdoor.CustomRuleEnabledState.ENABLED,
        match_conditions=[
            frontdoor.MatchConditionArgs(
                match_variable=frontdoor.MatchVariable.SOCKET_ADDR,
                operator=frontdoor.Operator.IP_MATCH,
                negate_condition=True,
                match_value=[str(_network(address)) for address in addresses],
            )
        ],
    )
