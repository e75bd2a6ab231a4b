"""The Azure stack's settings, and what several Azure components share.

`AzureSettings` is what `infra.azure.target` reads from the stack config. The rest is here
because more than one component uses it: the foundation, the site and the front door all admit
the operator addresses, the SQL server and the web apps require the same minimum TLS version,
and every web app (the sites, the front door's refusing origin) admits this profile only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import web

from zdd.appspec import AppSpec, DatabaseEngine, ReleaseKind
from zdd.phases import DatabaseMode, Instance

MIN_TLS_VERSION = "1.2"
# Front Door sends this header with the profile's id; the web apps accept nothing else.
FRONT_DOOR_ID_HEADER = "x-azure-fdid"
FRONT_DOOR_SERVICE_TAG = "AzureFrontDoor.Backend"


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
    # The visitors' host name, at the edge only: the sites get it as X-Forwarded-Host.
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
    # The driver's switch and drain gates (exported for zdd/targets/azure.py).
    switch_settle_seconds: int = 240
    drain_quiet_seconds: int = 300
    # After this long a switch whose route Azure accepted is judged by the drain alone, whatever
    # its `deploymentStatus` says (Front Door FAQ: a change takes up to 20 minutes).
    switch_floor_seconds: int = 1200
    switch_timeout_seconds: int = 2700
    # Azure Database for PostgreSQL flexible server, for an app spec whose `database.engine`
    # is postgresql (the administrator is zdd:sqlAdminLogin / zdd:sqlAdminPassword).
    postgres_version: str = "16"
    postgres_sku: str = "Standard_B1ms"
    postgres_storage_gb: int = 32

    @property
    def runs_from_package(self) -> bool:
        return self.app.release_kind is ReleaseKind.PACKAGE

    @property
    def on_postgres(self) -> bool:
        """The site's database is Azure Database for PostgreSQL, not Azure SQL."""
        return self.app.engine is DatabaseEngine.POSTGRESQL

    @property
    def postgres_tier(self) -> str:
        """The compute tier a flexible server SKU name belongs to (Standard_B1ms: Burstable)."""
        family = self.postgres_sku.removeprefix("Standard_")[:1].upper()
        return {"B": "Burstable", "E": "MemoryOptimized"}.get(family, "GeneralPurpose")

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


def operator_network(address: str) -> ipaddress.IPv4Network:
    """An operator address (`zdd:operatorIpAddresses`) as the network a rule admits."""
    return ipaddress.IPv4Network(address, strict=False)


def front_door_only(front_door_id: pulumi.Input[str]) -> web.IpSecurityRestrictionArgs:
    """The access rule that admits this stack's Front Door profile and no other."""
    return web.IpSecurityRestrictionArgs(
        name="front-door",
        description="Only this stack's Front Door profile",
        action="Allow",
        priority=100,
        tag=web.IpFilterTag.SERVICE_TAG,
        ip_address=FRONT_DOOR_SERVICE_TAG,
        headers={FRONT_DOOR_ID_HEADER: [front_door_id]},
    )
