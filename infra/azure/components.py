"""Azure target components: App Service web apps, Azure SQL databases, Front Door Standard.

One ComponentResource per concept of `infra.components` (AzureDatabase, AzureSite,
AzureFrontDoor), plus AzureFoundation for what every phase shares (resource group, App Service
plan, SQL server, Front Door profile). Logical names never depend on the phase, so a phase
change updates the primary's resources in place and never replaces them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlparse

import pulumi
from pulumi_azure_native import cdn, resources, sql, web
from pulumi_command import local

from infra.components import DatabaseArgs, FrontDoorArgs, SiteArgs, SiteLike
from zdd.phases import Instance

# The site reads its database mode from both: the CMS's own key and a generic one.
DATABASE_MODE_SETTINGS = ("EpiServer__Cms__DataAccess__DatabaseMode", "ZDD_DATABASE_MODE")
# Front Door sends this header with the profile's id; the web apps accept nothing else.
FRONT_DOOR_ID_HEADER = "x-azure-fdid"
FRONT_DOOR_SERVICE_TAG = "AzureFrontDoor.Backend"
MIN_TLS_VERSION = "1.2"


@dataclass(frozen=True)
class AzureSettings:
    """The Azure keys of the stack config (see `stacks/Pulumi.azure-example.yaml`)."""

    location: str
    resource_group_name: str
    name_prefix: str
    # Exactly one of the two, each a template with `{version}`.
    code_package_url: str | None
    container_image: str | None
    linux_runtime: str
    startup_command: str | None
    app_service_sku: str
    clone_own_plan: bool
    health_check_path: str
    sql_admin_login: str
    sql_admin_password: pulumi.Output[str]
    sql_entra_admin_login: str | None
    sql_entra_admin_object_id: str | None
    database_name: str
    database_sku: str
    backup_retention_days: int
    migration_command: str | None
    warmup_command: str | None
    smoke_command: str | None
    # Addresses (the machine that runs `zdd`) allowed to reach the web apps and the SQL server
    # directly, for the driver's health checks and the migration hook.
    operator_ip_addresses: tuple[str, ...] = ()
    connection_string_name: str = "EPiServerDB"
    # The deployment in progress (`zdd:deploymentId`): names a read-write clone's archive.
    deployment_id: str | None = None

    def code_for(self, version: str) -> str:
        template = self.code_package_url or self.container_image
        assert template is not None
        return template.replace("{version}", version)


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
        # App Service reaches Azure SQL through the "Azure services" rule (no VNet here).
        sql.FirewallRule(
            f"{name}-sql-azure-services",
            firewall_rule_name="AllowAllWindowsAzureIps",
            server_name=self.sql_server.name,
            resource_group_name=self.resource_group_name,
            start_ip_address="0.0.0.0",
            end_ip_address="0.0.0.0",
            opts=child,
        )
        for index, address in enumerate(settings.operator_ip_addresses):
            network = _network(address)
            sql.FirewallRule(
                f"{name}-sql-operator-{index}",
                firewall_rule_name=f"zdd-operator-{index}",
                server_name=self.sql_server.name,
                resource_group_name=self.resource_group_name,
                start_ip_address=str(network.network_address),
                end_ip_address=str(network.broadcast_address),
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
                    parent=self, ignore_changes=["sourceDatabaseId"], retain_on_delete=archived
                ),
            )
        self.database_name: pulumi.Output[str] = self.database.name
        self.database_id: pulumi.Output[str] = self.database.id
        connection = self._connection_string()
        if args.role is Instance.PRIMARY and args.schema_version and settings.migration_command:
            self.migration = local.Command(
                f"{name}-migration",
                create=settings.migration_command,
                environment={
                    "ZDD_DATABASE_CONNECTION": connection,
                    "ZDD_DATABASE_NAME": self.database_name,
                    "ZDD_SCHEMA_VERSION": args.schema_version,
                    "ZDD_DATABASE_GENERATION": str(args.generation),
                },
                # Runs again for a new schema version or a new (restored) generation only.
                triggers=[args.schema_version, args.generation],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.database]),
            )
            # The site connects once the migration has run.
            connection = pulumi.Output.all(connection, self.migration.id).apply(
                lambda values: str(values[0])
            )
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

    def _connection_string(self) -> pulumi.Output[str]:
        foundation = self._foundation
        settings = foundation.settings

        def render(values: list[str]) -> str:
            host, database, password = values
            return (
                f"Server=tcp:{host},1433;Initial Catalog={database};"
                f"User ID={settings.sql_admin_login};Password={password};"
                "Encrypt=True;TrustServerCertificate=False;Connection Timeout=30;"
            )

        return pulumi.Output.secret(
            pulumi.Output.all(
                foundation.sql_server.fully_qualified_domain_name,
                self.database.name,
                settings.sql_admin_password,
            ).apply(render)
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
        self.plan: web.AppServicePlan | None = None
        if spec.instance is Instance.CLONE and settings.clone_own_plan:
            self.plan = app_service_plan(
                f"{name}-plan", f"{settings.name_prefix}-{instance}-plan", foundation, child
            )
            plan_id = self.plan.id
        code = settings.code_for(spec.version)
        app_settings = [
            web.NameValuePairArgs(name="ZDD_VERSION", value=spec.version),
            web.NameValuePairArgs(name="ZDD_INSTANCE", value=instance),
            *(web.NameValuePairArgs(name=key, value=mode) for key in DATABASE_MODE_SETTINGS),
            web.NameValuePairArgs(name="ZDD_DATABASE_NAME", value=args.database.database_name),
        ]
        if settings.code_package_url:
            app_settings.append(web.NameValuePairArgs(name="WEBSITE_RUN_FROM_PACKAGE", value=code))
            linux_fx_version = settings.linux_runtime
        else:
            app_settings.append(
                web.NameValuePairArgs(name="WEBSITES_ENABLE_APP_SERVICE_STORAGE", value="false")
            )
            linux_fx_version = f"DOCKER|{code}"
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
            site_config=web.SiteConfigArgs(
                always_on=True,
                health_check_path=settings.health_check_path,
                min_tls_version=MIN_TLS_VERSION,
                scm_min_tls_version=MIN_TLS_VERSION,
                ftps_state=web.FtpsState.DISABLED,
                http20_enabled=True,
                linux_fx_version=linux_fx_version,
                app_command_line=settings.startup_command,
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
    """Front Door Standard: a public endpoint whose origin group holds every site (exactly the
    traffic origin enabled) and a preview endpoint whose origin group holds only the primary."""

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
        prefix = foundation.settings.name_prefix
        self.public_endpoint = self._endpoint(f"{name}-public-endpoint", f"{prefix}-public")
        self.preview_endpoint = self._endpoint(f"{name}-preview-endpoint", f"{prefix}-preview")
        self.site_group = self._origin_group(f"{name}-site-origins", "site")
        self.preview_group = self._origin_group(f"{name}-preview-origins", "preview")
        # The traffic origin is enabled first; every other one is disabled after it (it depends
        # on it), so the origin group never has a moment without an enabled origin.
        enabled = self._origin(
            f"{name}-{args.traffic}", self.site_group, args.traffic, args.origins[args.traffic]
        )
        self.origins: dict[Instance, cdn.AFDOrigin] = {args.traffic: enabled}
        for role, site in args.origins.items():
            if role != args.traffic:
                self.origins[role] = self._origin(
                    f"{name}-{role}", self.site_group, role, site, after=enabled
                )
        self.preview_origin = self._origin(
            f"{name}-preview-primary",
            self.preview_group,
            Instance.PRIMARY,
            args.origins[Instance.PRIMARY],
        )
        self.public_route = self._route(
            f"{name}-public-route",
            self.public_endpoint,
            self.site_group,
            list(self.origins.values()),
        )
        self.preview_route = self._route(
            f"{name}-preview-route",
            self.preview_endpoint,
            self.preview_group,
            [self.preview_origin],
        )
        self.public_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.public_endpoint.host_name
        )
        self.preview_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://", self.preview_endpoint.host_name
        )
        self.front_door_id: pulumi.Output[str] = foundation.front_door_id
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
        return cdn.AFDOriginGroup(
            logical,
            origin_group_name=azure_name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            health_probe_settings=cdn.HealthProbeParametersArgs(
                probe_path=self._foundation.settings.health_check_path,
                probe_protocol=cdn.ProbeProtocol.HTTPS,
                probe_request_type=cdn.HealthProbeRequestType.GET,
                probe_interval_in_seconds=30,
            ),
            load_balancing_settings=cdn.LoadBalancingSettingsParametersArgs(
                sample_size=4, successful_samples_required=3, additional_latency_in_milliseconds=50
            ),
            session_affinity_state=cdn.EnabledState.DISABLED,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin(
        self,
        logical: str,
        group: cdn.AFDOriginGroup,
        role: Instance,
        site: SiteLike,
        after: cdn.AFDOrigin | None = None,
    ) -> cdn.AFDOrigin:
        host = _host_of(site)
        return cdn.AFDOrigin(
            logical,
            origin_name=str(role),
            origin_group_name=group.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            host_name=host,
            origin_host_header=host,
            http_port=80,
            https_port=443,
            priority=1,
            weight=1000,
            enabled_state=cdn.EnabledState.DISABLED if after else cdn.EnabledState.ENABLED,
            enforce_certificate_name_check=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[after] if after else None),
        )

    def _route(
        self,
        logical: str,
        endpoint: cdn.AFDEndpoint,
        group: cdn.AFDOriginGroup,
        origins: list[cdn.AFDOrigin],
    ) -> cdn.Route:
        return cdn.Route(
            logical,
            route_name="site",
            endpoint_name=endpoint.name,
            profile_name=self._foundation.profile.name,
            resource_group_name=self._foundation.resource_group_name,
            origin_group=cdn.ResourceReferenceArgs(id=group.id),
            supported_protocols=[cdn.AFDEndpointProtocols.HTTP, cdn.AFDEndpointProtocols.HTTPS],
            patterns_to_match=["/*"],
            forwarding_protocol=cdn.ForwardingProtocol.HTTPS_ONLY,
            https_redirect=cdn.HttpsRedirect.ENABLED,
            link_to_default_domain=cdn.LinkToDefaultDomain.ENABLED,
            enabled_state=cdn.EnabledState.ENABLED,
            # A route needs an origin in its group.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(origins)),
        )
