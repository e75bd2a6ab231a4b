"""The Azure target's checks: its azure-native resources (web apps, SQL server, databases and
their backup retention, Front Door origins) as the components in `infra/azure/` declare them.

Each check returns no violation for a resource that is not the Azure target's; `CHECKS` names
the policy each one enforces, and `policies.rules` gathers them with the other targets'.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from policies.model import Resource, StackConfig, TargetChecks, Violation, clone_mode_problems
from zdd.phases import DATABASE_MODE_SETTINGS, MIN_BACKUP_RETENTION_DAYS

# The Azure target's resources (see the components in infra/azure/).
WEB_APP_TYPES = ("azure-native:web:WebApp", "azure-native:web:WebAppSlot")
FTP_ALLOWED = "azure-native:web:WebAppFtpAllowed"
SQL_SERVER = "azure-native:sql:Server"
SQL_DATABASE = "azure-native:sql:Database"
RETENTION = "azure-native:sql:BackupShortTermRetentionPolicy"
FIREWALL_RULE = "azure-native:sql:FirewallRule"
IPV6_FIREWALL_RULE = "azure-native:sql:IPv6FirewallRule"
AFD_ORIGIN = "azure-native:cdn:AFDOrigin"
# Azure Database for PostgreSQL flexible server (infra/azure/postgres.py): a primary generation
# is a server; its firewall rules are the server's.
POSTGRES_SERVER = "azure-native:dbforpostgresql:Server"
POSTGRES_FIREWALL_RULE = "azure-native:dbforpostgresql:FirewallRule"
PRIMARY_TYPES = (SQL_DATABASE, POSTGRES_SERVER)
POSTGRES_CONFIGURATION = "azure-native:dbforpostgresql:Configuration"
# Server parameters that keep a flexible server's connections encrypted (on by default).
POSTGRES_TLS_PARAMETERS = {"require_secure_transport": "on"}

MIN_TLS = (1, 2)
# Azure's "allow Azure services and resources to access this server" rule.
AZURE_SERVICES_RULE = ("0.0.0.0", "0.0.0.0")
# A firewall rule wider than this (a /8) is as good as open to everyone.
MAX_FIREWALL_ADDRESSES = 2**24
# Kept on a previous primary generation during a rollback with database, so that it is never
# replaced (infra/azure/database.py AzureDatabase._generation; a PostgreSQL server's in
# `_Generations`).
KEPT_IGNORE_CHANGES = frozenset({"createMode", "sourceDatabaseId", "restorePointInTime"})

_AZURE_DATABASE_ID_RE = re.compile(r"/servers/(?P<server>[^/]+)/databases/(?P<database>[^/]+)$")
_POSTGRES_SERVER_ID_RE = re.compile(r"/flexibleServers/(?P<database>[^/]+)$", re.IGNORECASE)


class _Generations:
    """How one kind of primary generation records where it came from: Azure SQL databases
    (`createMode: Default`, then copies of a database) and PostgreSQL flexible servers
    (`createMode: Create`, then restores of a server)."""

    def __init__(self, resource: Resource) -> None:
        postgres = resource.type == POSTGRES_SERVER
        self.original = "Create" if postgres else "Default"
        self.source = "sourceServerResourceId" if postgres else "sourceDatabaseId"
        self.point = "pointInTimeUTC" if postgres else "restorePointInTime"
        self.source_re = _POSTGRES_SERVER_ID_RE if postgres else _AZURE_DATABASE_ID_RE
        self.kept = frozenset({"createMode", self.source, self.point})


# -- helpers -----------------------------------------------------------------------------------


def _tags(resource: Resource) -> Mapping[str, Any]:
    tags = resource.prop("tags", {})
    return tags if isinstance(tags, Mapping) else {}


def _app_settings(resource: Resource) -> dict[str, Any]:
    site_config = resource.prop("siteConfig", {})
    pairs = site_config.get("appSettings") if isinstance(site_config, Mapping) else None
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        if isinstance(pair, Mapping) and "name" in pair:
            settings[str(pair["name"])] = pair.get("value")
    return settings


def _web_app_instance(resource: Resource) -> str | None:
    instance = _tags(resource).get("zdd-instance") or _app_settings(resource).get("ZDD_INSTANCE")
    return str(instance) if instance else None


def _database_role(resource: Resource) -> str | None:
    role = _tags(resource).get("zdd-role")
    return str(role) if role else None


def _tls(value: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in str(value).split("."))
    except ValueError:
        return None


def _tls_at_least(value: Any, minimum: tuple[int, ...] = MIN_TLS) -> bool:
    version = _tls(value)
    return version is not None and version >= minimum


def _point_in_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the clone runs ReadOnly unless the stack acknowledges data loss ---------------------------


def check_clone_read_only(resource: Resource, config: StackConfig) -> list[str]:
    """The clone web app's mode settings."""
    if resource.type not in WEB_APP_TYPES or _web_app_instance(resource) != "clone":
        return []
    settings = _app_settings(resource)
    return clone_mode_problems(
        resource, {key: settings.get(key) for key in DATABASE_MODE_SETTINGS}, config
    )


# -- the primary database is protected, never deleted or replaced outside a rollback -----------


def check_primary_database_protected(resource: Resource, config: StackConfig) -> list[str]:
    if resource.type not in PRIMARY_TYPES or _database_role(resource) != "primary":
        return []
    kind = _Generations(resource)
    tag = _tags(resource).get("zdd-generation")
    try:
        generation: int | None = int(str(tag)) if tag is not None else None
    except ValueError:
        generation = None
    wanted = config.generation
    kept = set(resource.ignore_changes) >= kind.kept
    if generation is not None and wanted is not None and generation < wanted:
        # A previous generation: declared only while the rollback with database that replaced
        # it goes on, retained on delete and never replaced (its creation is history).
        if resource.protect or (config.restoring and generation == wanted - 1 and kept):
            return []
        return [
            f"{resource.name}: previous generation {generation} of the primary database is "
            "unprotected outside the rollback with database that replaced it"
        ]
    problems = []
    if generation is not None and wanted is not None and generation > wanted:
        problems.append(
            f"{resource.name}: generation {generation} is ahead of zdd:databaseGeneration {wanted}"
        )
    if not resource.protect:
        problems.append(
            f"{resource.name}: the primary database must be protected (protect=True), so that "
            "no update deletes or replaces it"
        )
    create_mode = resource.prop("createMode", "Default")
    if generation == 1 and create_mode != kind.original:
        problems.append(
            f"{resource.name}: generation 1 is the original database, createMode must be "
            f"{kind.original}, not {create_mode}"
        )
    if generation is not None and generation > 1:
        problems.extend(_check_restored_generation(resource, generation, create_mode, config))
    return problems


def _check_restored_generation(
    resource: Resource, generation: int, create_mode: str, config: StackConfig
) -> list[str]:
    kind = _Generations(resource)
    if create_mode != "PointInTimeRestore":
        return [
            f"{resource.name}: generation {generation} must be a point-in-time restore "
            f"(createMode PointInTimeRestore), not {create_mode}: a new generation is only "
            "made by a rollback with database"
        ]
    problems = []
    source = str(resource.prop(kind.source, ""))
    match = kind.source_re.search(source)
    if match is None or not match.group("database").endswith(f"-g{generation - 1}"):
        problems.append(
            f"{resource.name}: generation {generation} must restore generation "
            f"{generation - 1}, not {source or 'nothing'}"
        )
    restored_from = config.get("restoredFrom")
    point = resource.prop(kind.point)
    if restored_from is not None and point is not None:
        wanted, actual = _point_in_time(restored_from), _point_in_time(str(point))
        if wanted is None or actual is None or wanted != actual:
            problems.append(
                f"{resource.name}: restores to {point}, not to the recorded restore point "
                f"zdd:restoredFrom {restored_from}"
            )
    elif point is None:
        problems.append(f"{resource.name}: a point-in-time restore needs {kind.point}")
    return problems


def check_primary_database_present(
    resources: Sequence[Resource], config: StackConfig
) -> list[Violation]:
    """A stack with web apps declares the primary database of the current generation,
    protected."""
    if not any(r.type in WEB_APP_TYPES for r in resources):
        return []
    problems: list[Violation] = []
    wanted = config.generation
    primaries = [r for r in resources if r.type in PRIMARY_TYPES and _database_role(r) == "primary"]
    current = [
        r
        for r in primaries
        if wanted is None or _tags(r).get("zdd-generation") in (str(wanted), wanted)
    ]
    if not current:
        problems.append(
            Violation(
                f"the stack declares no primary database of generation {wanted}: the "
                "update would delete it"
            )
        )
    for database in current:
        if not database.protect:
            problems.append(
                Violation(f"{database.name}: the primary database is unprotected", database.urn)
            )
    return problems


# -- backup retention of 7 days or more --------------------------------------------------------


def check_backup_retention(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type == POSTGRES_SERVER:
        # A flexible server keeps its own backups: the retention is the server's.
        days = (resource.prop("backup") or {}).get("backupRetentionDays")
    elif resource.type == RETENTION:
        days = resource.prop("retentionDays")
    else:
        return []
    if not isinstance(days, int | float) or days < MIN_BACKUP_RETENTION_DAYS:
        return [
            f"{resource.name}: short-term backup retention is {days} days; a rollback with "
            f"database restores from these backups, keep {MIN_BACKUP_RETENTION_DAYS} or more"
        ]
    return []


def check_backup_retention_covers_primary(
    resources: Sequence[Resource], _config: StackConfig
) -> list[Violation]:
    """Every protected primary database has a retention policy of 7 days or more."""
    policies = [r for r in resources if r.type == RETENTION]
    problems = []
    for database in resources:
        if database.type != SQL_DATABASE or _database_role(database) != "primary":
            continue
        if not database.protect:
            continue  # a previous generation kept during a rollback
        names = {database.prop("name"), database.prop("databaseName")} - {None}
        covering = [
            p
            for p in policies
            if p.prop("databaseName") in names
            or database.urn in p.dependencies.get("databaseName", ())
        ]
        if not any(
            isinstance(p.prop("retentionDays"), int | float)
            and p.prop("retentionDays") >= MIN_BACKUP_RETENTION_DAYS
            for p in covering
        ):
            problems.append(
                Violation(
                    f"{database.name}: no backup retention policy of "
                    f"{MIN_BACKUP_RETENTION_DAYS} days or more covers this primary database",
                    database.urn,
                )
            )
    return problems


# -- web apps: HTTPS only, TLS 1.2 or newer, FTPS disabled -------------------------------------


def check_https_only(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type not in WEB_APP_TYPES:
        return []
    if resource.prop("httpsOnly") is not True:
        return [f"{resource.name}: httpsOnly must be true (plain HTTP reaches the app otherwise)"]
    return []


def check_web_app_tls(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type not in WEB_APP_TYPES:
        return []
    site_config = resource.prop("siteConfig", {})
    if not isinstance(site_config, Mapping):
        site_config = {}
    problems = []
    minimum = site_config.get("minTlsVersion")
    if not _tls_at_least(minimum):
        problems.append(f"{resource.name}: siteConfig.minTlsVersion is {minimum}, needs 1.2+")
    scm = site_config.get("scmMinTlsVersion")
    if scm is not None and not _tls_at_least(scm):
        problems.append(f"{resource.name}: siteConfig.scmMinTlsVersion is {scm}, needs 1.2+")
    return problems


def check_ftps_disabled(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type == FTP_ALLOWED and resource.prop("allow") is not False:
        return [f"{resource.name}: FTP publishing credentials must not be allowed"]
    if resource.type not in WEB_APP_TYPES:
        return []
    site_config = resource.prop("siteConfig", {})
    state = site_config.get("ftpsState") if isinstance(site_config, Mapping) else None
    if state != "Disabled":
        return [f"{resource.name}: siteConfig.ftpsState is {state}, must be Disabled"]
    return []


# -- the SQL server is not open to every address -----------------------------------------------


def check_sql_firewall(resource: Resource, config: StackConfig) -> list[str]:
    if resource.type not in (FIREWALL_RULE, IPV6_FIREWALL_RULE, POSTGRES_FIREWALL_RULE):
        return []
    start, end = resource.prop("startIpAddress"), resource.prop("endIpAddress")
    if (start, end) == AZURE_SERVICES_RULE:
        # Not one address: every Azure customer's resources may try to connect through it.
        opted_in = (config.get("allowAzureServices") or "").lower() == "true"
        if opted_in and not config.is_secret("allowAzureServices"):
            return []
        return [
            f"{resource.name}: 0.0.0.0-0.0.0.0 lets every Azure service of any customer reach "
            "the SQL server; the web apps use their subnet. Set zdd:allowAzureServices true "
            "(plain config) only if you accept that"
        ]
    try:
        first = ipaddress.ip_address(str(start))
        last = ipaddress.ip_address(str(end))
    except ValueError:
        return [f"{resource.name}: {start}-{end} is not an address range"]
    if first.version != last.version or int(last) < int(first):
        return [f"{resource.name}: {start}-{end} is not an address range"]
    size = int(last) - int(first) + 1
    everything = 2 ** (32 if first.version == 4 else 128)
    if size == everything:
        return [f"{resource.name}: {start}-{end} opens the SQL server to every address"]
    if first.version == 4 and size > MAX_FIREWALL_ADDRESSES:
        return [
            f"{resource.name}: {start}-{end} opens the SQL server to {size:,} addresses; allow "
            "the operator's addresses only"
        ]
    return []


def check_sql_server_tls(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type != SQL_SERVER:
        return []
    minimum = resource.prop("minimalTlsVersion")
    if not _tls_at_least(minimum):
        return [f"{resource.name}: minimalTlsVersion is {minimum}, needs 1.2+"]
    return []


def check_postgres_server_tls(resource: Resource, _config: StackConfig) -> list[str]:
    """A flexible server requires TLS unless a server parameter turns it off; the program
    never declares one, and nothing else may."""
    if resource.type != POSTGRES_CONFIGURATION:
        return []
    name = str(resource.prop("configurationName", ""))
    wanted = POSTGRES_TLS_PARAMETERS.get(name)
    value = str(resource.prop("value", "")).lower()
    if wanted is not None and value != wanted:
        return [f"{resource.name}: {name} is {value!r}: connections must require TLS"]
    if name == "ssl_min_protocol_version" and not _tls_at_least(value.removeprefix("tlsv")):
        return [f"{resource.name}: ssl_min_protocol_version is {value!r}, needs TLSv1.2+"]
    return []


# -- exactly one origin takes public traffic at a time -----------------------------------------


def _origin_group(resource: Resource) -> str:
    group = resource.prop("originGroupName")
    if group:
        return str(group)
    urns = resource.dependencies.get("originGroupName", ())
    return urns[0] if urns else "?"


def check_one_public_origin(resources: Sequence[Resource], _config: StackConfig) -> list[Violation]:
    """In every origin group (the public one, and the preview one that only holds the primary)
    exactly one origin is enabled."""
    problems: list[Violation] = []
    groups: dict[str, list[Resource]] = {}
    for origin in (r for r in resources if r.type == AFD_ORIGIN):
        groups.setdefault(_origin_group(origin), []).append(origin)
    for group, origins in sorted(groups.items()):
        enabled = [o for o in origins if o.prop("enabledState", "Enabled") == "Enabled"]
        if len(enabled) != 1:
            names = ", ".join(o.name for o in enabled) or "none"
            problems.append(
                Violation(
                    f"origin group {group}: {len(enabled)} origins take traffic ({names}); "
                    "exactly one must"
                )
            )
    return problems


# -- the clone's database is a copy of the primary's -------------------------------------------


def check_clone_database_is_copy(resource: Resource, config: StackConfig) -> list[str]:
    if resource.type != SQL_DATABASE or _database_role(resource) != "clone":
        return []
    create_mode = resource.prop("createMode", "Default")
    if create_mode != "Copy":
        return [f"{resource.name}: createMode is {create_mode}, the clone's database is a Copy"]
    source = str(resource.prop("sourceDatabaseId", ""))
    match = _AZURE_DATABASE_ID_RE.search(source)
    if match is None:
        return [f"{resource.name}: sourceDatabaseId {source or 'is missing'}: not a database"]
    problems = []
    server = resource.prop("serverName")
    if server is not None and match.group("server") != server:
        problems.append(f"{resource.name}: copies a database of another server ({source})")
    primary_name = config.get("databaseName") or "site"
    if not re.fullmatch(rf"{re.escape(primary_name)}-g\d+", match.group("database")):
        problems.append(
            f"{resource.name}: copies {match.group('database')}, not a generation of the "
            f"primary database {primary_name}"
        )
    return problems


CHECKS = TargetChecks(
    name="azure",
    resource={
        "clone-read-only": check_clone_read_only,
        "primary-database-protected": check_primary_database_protected,
        "backup-retention-7-days": check_backup_retention,
        "web-app-https-only": check_https_only,
        "web-app-tls-1-2": check_web_app_tls,
        "web-app-ftps-disabled": check_ftps_disabled,
        "sql-server-not-open-to-all": check_sql_firewall,
        "sql-server-tls-1-2": check_sql_server_tls,
        "postgres-server-tls": check_postgres_server_tls,
        "clone-database-is-copy": check_clone_database_is_copy,
    },
    stack={
        "primary-database-present": check_primary_database_present,
        "backup-retention-covers-primary": check_backup_retention_covers_primary,
        "one-public-origin": check_one_public_origin,
    },
)
