"""Read the Azure keys of the `zdd` namespace and bind the Azure components to them.

The site is the stack's app spec (`zdd:app`, as on the local target): its `releases` is a
container image or package URL template, and its health path, start, migrate and digest
commands are used as they are. Every other key is documented in
`stacks/Pulumi.azure-example.yaml`; `zdd.targets.azure.initial_config` writes the ones a new stack
needs. A wrong value fails the program with one clear line (`pulumi.RunError`) before anything
is declared.
"""

from __future__ import annotations

import re

import pulumi

from infra.azure.database import AzureDatabase
from infra.azure.foundation import AzureFoundation
from infra.azure.frontdoor import AzureFrontDoor
from infra.azure.postgres import AzurePostgresDatabase
from infra.azure.settings import AzureSettings
from infra.azure.site import AzureSite
from infra.components import DatabaseArgs, FrontDoorArgs, SiteArgs
from infra.program import Target
from zdd import appspec
from zdd.appspec import AppSpec, ReleaseKind
from zdd.phases import MIN_BACKUP_RETENTION_DAYS

# Short enough that "<prefix>-preview" fits a Front Door endpoint name (46 characters at most)
# and "<prefix>-primary" a web app name; Azure wants lower case letters, digits and hyphens.
_NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
_SKU_RE = re.compile(r"^[A-Za-z0-9_]+$")
MAX_BACKUP_RETENTION_DAYS = 35
# "Run from package isn't supported for Python apps" nor Java (App Service docs): a package
# URL is accepted only for runtime stacks that can run from one.
PACKAGE_RUNTIMES = ("DOTNETCORE", "NODE", "PHP")
_REGISTRY_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ContainerRegistry/registries/[^/]+$",
    re.IGNORECASE,
)
_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_TIMEOUT_RE = re.compile(r"^\d+[hm]$")
# Major versions of Azure Database for PostgreSQL flexible server the program declares.
POSTGRES_VERSIONS = ("13", "14", "15", "16", "17")
_POSTGRES_SKU_RE = re.compile(r"^Standard_[BDE][A-Za-z0-9_]+$")


def _fail(message: str) -> pulumi.RunError:
    return pulumi.RunError(message)


def _app(config: pulumi.Config) -> AppSpec:
    """The site the stack runs: its app spec, whose releases a web app fetches itself."""
    try:
        spec = appspec.from_config({appspec.CONFIG_KEY: config.get(appspec.CONFIG_KEY) or ""})
    except appspec.InvalidAppSpec as exc:
        raise _fail(str(exc)) from None
    if spec is None:
        raise _fail(
            f"zdd:{appspec.CONFIG_KEY} is not set: an Azure stack runs the site its app spec "
            "describes; create it with `zdd init --target azure --app FILE`"
        )
    if spec.release_kind is ReleaseKind.FOLDER:
        raise _fail(
            f"zdd:{appspec.CONFIG_KEY} `releases` {spec.releases!r} is a folder on this machine: "
            "an Azure web app runs a container image (registry/site:{version}) or an https "
            "package URL"
        )
    return spec


def _addresses(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    addresses = tuple(part.strip() for part in raw.split(",") if part.strip())
    for address in addresses:
        if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", address):
            raise _fail(f"zdd:operatorIpAddresses: {address!r} is not an IPv4 address or range")
    return addresses


def read_azure_settings(config: pulumi.Config) -> AzureSettings:
    """The Azure part of the stack config, validated key by key in the order below (a stack
    with several wrong values is told of the first)."""
    name_prefix = _name_prefix(config)
    app = _app(config)
    runtime = _runtime(config, app)
    registry = _registry(config)
    domain = _domain(config)
    create_timeout = _create_timeout(config)
    operators = _operators(config)
    migration_login = config.get("migrationLogin") or None
    migration_password = config.get_secret("migrationPassword")
    retention = _retention(config)
    _check_skus(config)
    entra_login, entra_object_id = _entra_admin(config)
    password = _admin_password(config)
    postgres_version, postgres_sku = _postgres(config)
    return AzureSettings(
        location=config.get("azureLocation") or "westeurope",
        resource_group_name=config.get("resourceGroupName") or f"rg-{name_prefix}",
        name_prefix=name_prefix,
        app=app,
        linux_runtime=runtime,
        app_service_sku=config.get("appServiceSku") or "P0v3",
        clone_own_plan=config.get_bool("cloneOwnPlan") or False,
        sql_admin_login=config.get("sqlAdminLogin") or "zddadmin",
        sql_admin_password=password,
        sql_entra_admin_login=entra_login,
        sql_entra_admin_object_id=entra_object_id,
        database_name=config.get("databaseName") or "site",
        database_sku=config.get("databaseSku") or "S0",
        backup_retention_days=retention,
        warmup_command=config.get("warmupCommand") or None,
        smoke_command=config.get("smokeCommand") or None,
        operator_ip_addresses=operators,
        connection_string_name=config.get("connectionStringName") or "EPiServerDB",
        deployment_id=config.get("deploymentId") or None,
        container_port=_positive(config, "containerPort", 8000),
        container_registry_id=registry,
        custom_domain=domain,
        allow_azure_services=config.get_bool("allowAzureServices") or False,
        migration_login=migration_login,
        migration_password=migration_password,
        migration_attempts=_positive(config, "migrationAttempts", 6),
        migration_retry_seconds=_positive(config, "migrationRetrySeconds", 60),
        database_create_timeout=create_timeout,
        switch_settle_seconds=_positive(config, "switchSettleSeconds", 240),
        drain_quiet_seconds=_positive(config, "drainQuietSeconds", 300),
        switch_floor_seconds=_positive(config, "switchFloorSeconds", 1200),
        switch_timeout_seconds=_positive(config, "switchTimeoutSeconds", 2700),
        postgres_version=postgres_version,
        postgres_sku=postgres_sku,
        postgres_storage_gb=_positive(config, "postgresStorageGb", 32),
    )


def _name_prefix(config: pulumi.Config) -> str:
    stack = pulumi.get_stack()
    name_prefix = config.get("namePrefix") or f"zdd-{re.sub(r'[^a-z0-9-]', '-', stack.lower())}"
    if not _NAME_PREFIX_RE.match(name_prefix):
        raise _fail(
            f"zdd:namePrefix {name_prefix!r} must be 3-30 lower-case letters, digits or "
            "hyphens, starting with a letter (it names the web apps, the SQL server and the "
            "Front Door endpoints, which are globally unique)"
        )
    return name_prefix


def _runtime(config: pulumi.Config, app: AppSpec) -> str | None:
    """The runtime stack of a package, which must be one that can run from a package."""
    runtime = config.get("linuxRuntime") or None
    if app.release_kind is ReleaseKind.PACKAGE and (
        runtime is None or runtime.split("|")[0].upper() not in PACKAGE_RUNTIMES
    ):
        raise _fail(
            f"a package URL in zdd:{appspec.CONFIG_KEY} `releases` needs zdd:linuxRuntime of a "
            f"stack that can run from a package ({', '.join(PACKAGE_RUNTIMES)}), not "
            f"{runtime!r}: App Service does not run Python or Java from a package; use a "
            "container image"
        )
    return runtime


def _registry(config: pulumi.Config) -> str | None:
    registry = config.get("containerRegistryId") or None
    if registry is not None and not _REGISTRY_ID_RE.match(registry):
        raise _fail(f"zdd:containerRegistryId {registry!r} is not a container registry's id")
    return registry


def _domain(config: pulumi.Config) -> str | None:
    domain = (config.get("customDomain") or "").lower() or None
    if domain is not None and not _DOMAIN_RE.match(domain):
        raise _fail(f"zdd:customDomain {domain!r} is not a host name such as www.example.com")
    return domain


def _create_timeout(config: pulumi.Config) -> str:
    create_timeout = config.get("databaseCreateTimeout") or "12h"
    if not _TIMEOUT_RE.match(create_timeout):
        raise _fail(f"zdd:databaseCreateTimeout {create_timeout!r}: use hours or minutes (12h)")
    return create_timeout


def _operators(config: pulumi.Config) -> tuple[str, ...]:
    operators = _addresses(config.get("operatorIpAddresses"))
    if not operators:
        raise _fail(
            "zdd:operatorIpAddresses is not set: the preview endpoint and the apps' own "
            "addresses answer the operator only (the driver's gates run from there)"
        )
    return operators


def _retention(config: pulumi.Config) -> int:
    retention = config.get_int("backupRetentionDays") or MIN_BACKUP_RETENTION_DAYS
    if not MIN_BACKUP_RETENTION_DAYS <= retention <= MAX_BACKUP_RETENTION_DAYS:
        raise _fail(
            f"zdd:backupRetentionDays {retention} must be {MIN_BACKUP_RETENTION_DAYS} to "
            f"{MAX_BACKUP_RETENTION_DAYS}: a rollback with database restores from these backups"
        )
    return retention


def _check_skus(config: pulumi.Config) -> None:
    for key in ("appServiceSku", "databaseSku"):
        sku = config.get(key)
        if sku is not None and not _SKU_RE.match(sku):
            raise _fail(f"zdd:{key} {sku!r} is not an SKU name (for example P0v3 or S0)")


def _entra_admin(config: pulumi.Config) -> tuple[str | None, str | None]:
    """The SQL server's Microsoft Entra administrator: its login and object id, or neither."""
    entra_login = config.get("sqlEntraAdminLogin") or None
    entra_object_id = config.get("sqlEntraAdminObjectId") or None
    if (entra_login is None) != (entra_object_id is None):
        raise _fail("set both zdd:sqlEntraAdminLogin and zdd:sqlEntraAdminObjectId, or neither")
    return entra_login, entra_object_id


def _admin_password(config: pulumi.Config) -> pulumi.Output[str]:
    password = config.get_secret("sqlAdminPassword")
    if password is None:
        raise _fail(
            "zdd:sqlAdminPassword is not set: `zdd init` generates one, or run "
            "`pulumi config set --secret zdd:sqlAdminPassword <password>`"
        )
    return password


def _postgres(config: pulumi.Config) -> tuple[str, str]:
    """The flexible server's major version and SKU, checked whichever engine the site uses."""
    postgres_version = config.get("postgresVersion") or "16"
    if postgres_version not in POSTGRES_VERSIONS:
        raise _fail(
            f"zdd:postgresVersion {postgres_version!r} is not one of {', '.join(POSTGRES_VERSIONS)}"
        )
    postgres_sku = config.get("postgresSku") or "Standard_B1ms"
    if not _POSTGRES_SKU_RE.match(postgres_sku):
        raise _fail(
            f"zdd:postgresSku {postgres_sku!r} is not a flexible server SKU (for example "
            "Standard_B1ms or Standard_D2ds_v5)"
        )
    return postgres_version, postgres_sku


def _positive(config: pulumi.Config, key: str, default: int) -> int:
    value = config.get_int(key)
    if value is None:
        return default
    if value < 1:
        raise _fail(f"zdd:{key} {value} must be 1 or more")
    return value


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
    ) -> AzureDatabase | AzurePostgresDatabase:
        if settings.on_postgres:
            return AzurePostgresDatabase(name, args, foundation(opts), opts)
        return AzureDatabase(name, args, foundation(opts), opts)

    def site(name: str, args: SiteArgs, opts: pulumi.ResourceOptions | None) -> AzureSite:
        return AzureSite(name, args, foundation(opts), opts)

    def front_door(
        name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None
    ) -> AzureFrontDoor:
        return AzureFrontDoor(name, args, foundation(opts), opts)

    return Target(name="azure", database=database, site=site, front_door=front_door, rehearses=True)
