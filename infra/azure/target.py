"""Read the Azure keys of the `zdd` namespace and bind the Azure components to them.

Every key is documented in `stacks/Pulumi.azure-example.yaml`; `zdd.azure.initial_config`
writes the ones a new stack needs. A wrong value fails the program with one clear line
(`pulumi.RunError`) before anything is declared.
"""

from __future__ import annotations

import re

import pulumi

from infra.azure.components import (
    AzureDatabase,
    AzureFoundation,
    AzureFrontDoor,
    AzureSettings,
    AzureSite,
)
from infra.components import DatabaseArgs, FrontDoorArgs, SiteArgs
from infra.program import Target

VERSION_PLACEHOLDER = "{version}"
# Short enough that "<prefix>-preview" fits a Front Door endpoint name (46 characters at most)
# and "<prefix>-primary" a web app name; Azure wants lower case letters, digits and hyphens.
_NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
_SKU_RE = re.compile(r"^[A-Za-z0-9_]+$")
MIN_BACKUP_RETENTION_DAYS = 7
MAX_BACKUP_RETENTION_DAYS = 35


def _fail(message: str) -> pulumi.RunError:
    return pulumi.RunError(message)


def _template(config: pulumi.Config, key: str) -> str | None:
    value = config.get(key) or None
    if value is not None and VERSION_PLACEHOLDER not in value:
        raise _fail(
            f"zdd:{key} {value!r} has no {VERSION_PLACEHOLDER} placeholder: every version "
            "would run the same code"
        )
    return value


def _addresses(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    addresses = tuple(part.strip() for part in raw.split(",") if part.strip())
    for address in addresses:
        if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", address):
            raise _fail(f"zdd:operatorIpAddresses: {address!r} is not an IPv4 address or range")
    return addresses


def read_azure_settings(config: pulumi.Config) -> AzureSettings:
    """The Azure part of the stack config, validated."""
    stack = pulumi.get_stack()
    name_prefix = config.get("namePrefix") or f"zdd-{re.sub(r'[^a-z0-9-]', '-', stack.lower())}"
    if not _NAME_PREFIX_RE.match(name_prefix):
        raise _fail(
            f"zdd:namePrefix {name_prefix!r} must be 3-30 lower-case letters, digits or "
            "hyphens, starting with a letter (it names the web apps, the SQL server and the "
            "Front Door endpoints, which are globally unique)"
        )
    package = _template(config, "codePackageUrl")
    image = _template(config, "containerImage")
    if (package is None) == (image is None):
        raise _fail(
            "set exactly one of zdd:codePackageUrl (a run-from-package URL) or "
            f"zdd:containerImage (an image reference), each with {VERSION_PLACEHOLDER}"
        )
    retention = config.get_int("backupRetentionDays") or MIN_BACKUP_RETENTION_DAYS
    if not MIN_BACKUP_RETENTION_DAYS <= retention <= MAX_BACKUP_RETENTION_DAYS:
        raise _fail(
            f"zdd:backupRetentionDays {retention} must be {MIN_BACKUP_RETENTION_DAYS} to "
            f"{MAX_BACKUP_RETENTION_DAYS}: a rollback with database restores from these backups"
        )
    for key in ("appServiceSku", "databaseSku"):
        sku = config.get(key)
        if sku is not None and not _SKU_RE.match(sku):
            raise _fail(f"zdd:{key} {sku!r} is not an SKU name (for example P0v3 or S0)")
    entra_login = config.get("sqlEntraAdminLogin") or None
    entra_object_id = config.get("sqlEntraAdminObjectId") or None
    if (entra_login is None) != (entra_object_id is None):
        raise _fail("set both zdd:sqlEntraAdminLogin and zdd:sqlEntraAdminObjectId, or neither")
    password = config.get_secret("sqlAdminPassword")
    if password is None:
        raise _fail(
            "zdd:sqlAdminPassword is not set: `zdd init` generates one, or run "
            "`pulumi config set --secret zdd:sqlAdminPassword <password>`"
        )
    health_check_path = config.get("healthCheckPath") or "/healthz"
    if not health_check_path.startswith("/"):
        raise _fail(f"zdd:healthCheckPath {health_check_path!r} must start with /")
    return AzureSettings(
        location=config.get("azureLocation") or "westeurope",
        resource_group_name=config.get("resourceGroupName") or f"rg-{name_prefix}",
        name_prefix=name_prefix,
        code_package_url=package,
        container_image=image,
        linux_runtime=config.get("linuxRuntime") or "PYTHON|3.11",
        startup_command=config.get("startupCommand") or None,
        app_service_sku=config.get("appServiceSku") or "P0v3",
        clone_own_plan=config.get_bool("cloneOwnPlan") or False,
        health_check_path=health_check_path,
        sql_admin_login=config.get("sqlAdminLogin") or "zddadmin",
        sql_admin_password=password,
        sql_entra_admin_login=entra_login,
        sql_entra_admin_object_id=entra_object_id,
        database_name=config.get("databaseName") or "site",
        database_sku=config.get("databaseSku") or "S0",
        backup_retention_days=retention,
        migration_command=config.get("migrationCommand") or None,
        warmup_command=config.get("warmupCommand") or None,
        smoke_command=config.get("smokeCommand") or None,
        operator_ip_addresses=_addresses(config.get("operatorIpAddresses")),
        connection_string_name=config.get("connectionStringName") or "EPiServerDB",
        deployment_id=config.get("deploymentId") or None,
    )


class _Foundation:
    """The shared resources (resource group, plan, SQL server, Front Door profile), declared
    once, by the first component that needs them and with its options (the phase guard)."""

    def __init__(self, settings: AzureSettings) -> None:
        self.settings = settings
        self._built: AzureFoundation | None = None

    def __call__(self, opts: pulumi.ResourceOptions | None) -> AzureFoundation:
        if self._built is None:
            self._built = AzureFoundation("azure", self.settings, opts)
        return self._built


def azure_target(config: pulumi.Config) -> Target:
    settings = read_azure_settings(config)
    foundation = _Foundation(settings)

    def database(
        name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None
    ) -> AzureDatabase:
        return AzureDatabase(name, args, foundation(opts), opts)

    def site(name: str, args: SiteArgs, opts: pulumi.ResourceOptions | None) -> AzureSite:
        return AzureSite(name, args, foundation(opts), opts)

    def front_door(
        name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None
    ) -> AzureFrontDoor:
        return AzureFrontDoor(name, args, foundation(opts), opts)

    return Target(name="azure", database=database, site=site, front_door=front_door)
