"""The guardrails of a smooth deployment, as pure functions (no Pulumi engine, no I/O).

Each check takes what the engine shows a policy pack, reduced to plain data: a `Resource`
(type, logical name, properties, options) or every resource of the stack, plus the stack's
`zdd:*` config (`StackConfig`). It returns the violations it finds, as sentences; no
violation means the check passes. `policies/__main__.py` turns `POLICIES` into a
`pulumi_policy.PolicyPack`; the tests call the checks directly.

Resource checks see a resource's inputs before the engine changes it, so a violation stops
`pulumi up` before that resource is touched. Stack checks see every resource of the update's
result (their outputs) once all resources are registered: in a preview they stop the
deployment before anything changes; in an update they run after the changes and fail it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from zdd.phases import (
    DATABASE_MODE_SETTINGS,
    MIN_BACKUP_RETENTION_DAYS,
    DatabaseMode,
    InvalidStackConfig,
    Mode,
    accepts_data_loss,
    database_generation,
)

# -- what the engine shows ---------------------------------------------------------------------

DYNAMIC = "pulumi-python:dynamic:Resource"
# The local target's resources (dynamic resources; see infra/local/components.py).
PRIMARY_DB_FILE = "primary-db-file"
CLONE_DB_FILE = "clone-db-file"
# The Azure target's resources (see infra/azure/components.py).
WEB_APP_TYPES = ("azure-native:web:WebApp", "azure-native:web:WebAppSlot")
FTP_ALLOWED = "azure-native:web:WebAppFtpAllowed"
SQL_SERVER = "azure-native:sql:Server"
SQL_DATABASE = "azure-native:sql:Database"
RETENTION = "azure-native:sql:BackupShortTermRetentionPolicy"
FIREWALL_RULE = "azure-native:sql:FirewallRule"
IPV6_FIREWALL_RULE = "azure-native:sql:IPv6FirewallRule"
AFD_ORIGIN = "azure-native:cdn:AFDOrigin"

MIN_TLS = (1, 2)
# Azure's "allow Azure services and resources to access this server" rule.
AZURE_SERVICES_RULE = ("0.0.0.0", "0.0.0.0")
# A firewall rule wider than this (a /8) is as good as open to everyone.
MAX_FIREWALL_ADDRESSES = 2**24
# Kept on a previous primary generation during a rollback with database, so that it is never
# replaced (infra/azure/components.py AzureDatabase._generation).
KEPT_IGNORE_CHANGES = frozenset({"createMode", "sourceDatabaseId", "restorePointInTime"})

_PRIMARY_FILE_RE = re.compile(r"^primary-g(\d+)\.sqlite$")
_AZURE_DATABASE_ID_RE = re.compile(r"/servers/(?P<server>[^/]+)/databases/(?P<database>[^/]+)$")


@dataclass(frozen=True)
class Resource:
    """One resource as a policy sees it. `props` are inputs in resource checks and outputs in
    stack checks; `dependencies` maps a property to the URNs its value came from."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return self.type == DYNAMIC

    def prop(self, key: str, default: Any = None) -> Any:
        value = self.props.get(key, default)
        return default if value is None else value


@dataclass(frozen=True)
class StackConfig:
    """The stack's config as the engine passes it to the pack (`zdd:mode` -> `read-write`).

    `known` is False when the engine did not pass any: then every check that needs an
    acknowledgement fails closed, and the checks that compare with the config fall back to
    what holds for every legal config."""

    values: Mapping[str, str] = field(default_factory=dict)
    known: bool = True
    # Keys whose values are secret: the pack never sees those values.
    secret_keys: frozenset[str] = frozenset()

    def get(self, key: str) -> str | None:
        value = self.values.get(f"zdd:{key}")
        return value if value else None

    def is_secret(self, key: str) -> bool:
        return f"zdd:{key}" in self.secret_keys

    @property
    def unprefixed(self) -> dict[str, str]:
        """The set `zdd:*` values, keyed without the namespace as `zdd.phases` reads them."""
        return {
            key.removeprefix("zdd:"): value
            for key, value in self.values.items()
            if key.startswith("zdd:") and value
        }

    @property
    def data_loss_acknowledged(self) -> bool:
        """ReadWrite needs both, as the program and the driver require, in plain config: an
        acknowledgement nobody can read in the stack's config is no acknowledgement."""
        return (
            self.get("mode") == Mode.READ_WRITE
            and accepts_data_loss(self.unprefixed)
            and not self.is_secret("acceptDataLoss")
        )

    @property
    def generation(self) -> int | None:
        """The primary database's generation, when the config says which one."""
        if not self.known:
            return None
        try:
            return database_generation(self.unprefixed)
        except InvalidStackConfig:
            return None

    @property
    def restoring(self) -> bool:
        """A rollback with database is in progress: this deployment restored the primary
        database from its own restore point."""
        restored_from = self.get("restoredFrom")
        return restored_from is not None and restored_from == self.get("restorePoint")

    @property
    def state_dir(self) -> PurePath | None:
        state_dir = self.get("stateDir")
        return PurePath(state_dir) if state_dir else None


@dataclass(frozen=True)
class Violation:
    message: str
    # The resource at fault (stack checks); None for the stack as a whole.
    urn: str | None = None


ResourceCheck = Callable[[Resource, StackConfig], list[str]]
StackCheck = Callable[[Sequence[Resource], StackConfig], list[Violation]]


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    check: ResourceCheck | None = None
    stack_check: StackCheck | None = None


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


def _is_local_site(resource: Resource) -> bool:
    return (
        resource.is_dynamic and "instance" in resource.props and "database_mode" in resource.props
    )


def _is_local_front_door(resource: Resource) -> bool:
    return resource.is_dynamic and "active" in resource.props and "origins" in resource.props


def restore_file_name(restore_point: str) -> str:
    """The local restore point's file name (infra/local/components.py restore_point_path)."""
    return f"restore-{restore_point.replace(':', '')}.sqlite"


def _point_in_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the clone runs ReadOnly unless the stack acknowledges data loss ---------------------------


def check_clone_read_only(resource: Resource, config: StackConfig) -> list[str]:
    """Local: the clone process's `database_mode`. Azure: the clone web app's mode settings."""
    if _is_local_site(resource):
        if resource.prop("instance") != "clone":
            return []
        modes = {"database_mode": resource.prop("database_mode")}
    elif resource.type in WEB_APP_TYPES:
        if _web_app_instance(resource) != "clone":
            return []
        settings = _app_settings(resource)
        modes = {key: settings.get(key) for key in DATABASE_MODE_SETTINGS}
    else:
        return []
    problems = []
    for key, mode in modes.items():
        if mode == DatabaseMode.READ_ONLY:
            continue
        if mode == DatabaseMode.READ_WRITE and config.data_loss_acknowledged:
            continue
        if mode == DatabaseMode.READ_WRITE:
            why = (
                "zdd:acceptDataLoss is a secret; the acknowledgement must be plain config"
                if config.is_secret("acceptDataLoss")
                else "the stack does not acknowledge data loss (zdd:mode read-write and "
                "zdd:acceptDataLoss true)"
            )
            problems.append(
                f"{resource.name}: {key} is ReadWrite but {why}: writes to the clone would be "
                "lost when it is destroyed"
            )
        else:
            problems.append(f"{resource.name}: {key} is {mode!r}, not {DatabaseMode.READ_ONLY}")
    return problems


# -- the primary database is protected, never deleted or replaced outside a rollback -----------


def check_primary_database_protected(resource: Resource, config: StackConfig) -> list[str]:
    if resource.is_dynamic and resource.name == PRIMARY_DB_FILE:
        return _check_local_primary_database(resource, config)
    if resource.type == SQL_DATABASE and _database_role(resource) == "primary":
        return _check_azure_primary_database(resource, config)
    return []


def _check_local_primary_database(resource: Resource, config: StackConfig) -> list[str]:
    """What replaces the file (a new `path` or `source`) can only change with a new database
    generation, and a new generation only comes from the recorded restore point."""
    path = PurePath(str(resource.prop("path", "")))
    match = _PRIMARY_FILE_RE.match(path.name)
    if match is None:
        return [f"{resource.name}: {path} is not a primary database generation file"]
    problems = []
    generation = int(match.group(1))
    wanted = config.generation
    if wanted is not None and generation != wanted:
        problems.append(
            f"{resource.name}: {path.name} is generation {generation}, the stack's primary "
            f"database is generation {wanted} (zdd:databaseGeneration): that would replace it"
        )
    if config.state_dir is not None and path.parent != config.state_dir:
        problems.append(
            f"{resource.name}: {path} is outside zdd:stateDir {config.state_dir}: that would "
            "replace the primary database with a new one"
        )
    if resource.prop("keep_baseline"):
        problems.append(
            f"{resource.name}: keep_baseline is for a ReadWrite clone's copy; on the primary "
            "database it would replace it"
        )
    source = resource.prop("source")
    if generation == 1 and source:
        problems.append(
            f"{resource.name}: generation 1 is the original database; it is never made from "
            f"another one ({source})"
        )
    if generation > 1:
        restored_from = config.get("restoredFrom")
        if not source:
            problems.append(
                f"{resource.name}: generation {generation} has no source: a new generation of "
                "the primary database is only made by a rollback with database, from its "
                "restore point"
            )
        elif restored_from is not None and PurePath(str(source)).name != restore_file_name(
            restored_from
        ):
            problems.append(
                f"{resource.name}: generation {generation} comes from {source}, not from the "
                f"restore point zdd:restoredFrom {restored_from}"
            )
        elif config.known and restored_from is None:
            problems.append(
                f"{resource.name}: generation {generation} needs zdd:restoredFrom, the restore "
                "point of the rollback with database that made it"
            )
    return problems


def _check_azure_primary_database(resource: Resource, config: StackConfig) -> list[str]:
    tag = _tags(resource).get("zdd-generation")
    try:
        generation: int | None = int(str(tag)) if tag is not None else None
    except ValueError:
        generation = None
    wanted = config.generation
    kept = set(resource.ignore_changes) >= KEPT_IGNORE_CHANGES
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
    if generation == 1 and create_mode != "Default":
        problems.append(
            f"{resource.name}: generation 1 is the original database, createMode must be "
            f"Default, not {create_mode}"
        )
    if generation is not None and generation > 1:
        problems.extend(_check_restored_generation(resource, generation, create_mode, config))
    return problems


def _check_restored_generation(
    resource: Resource, generation: int, create_mode: str, config: StackConfig
) -> list[str]:
    if create_mode != "PointInTimeRestore":
        return [
            f"{resource.name}: generation {generation} must be a point-in-time restore "
            f"(createMode PointInTimeRestore), not {create_mode}: a new generation is only "
            "made by a rollback with database"
        ]
    problems = []
    source = str(resource.prop("sourceDatabaseId", ""))
    match = _AZURE_DATABASE_ID_RE.search(source)
    if match is None or not match.group("database").endswith(f"-g{generation - 1}"):
        problems.append(
            f"{resource.name}: generation {generation} must restore generation "
            f"{generation - 1}, not {source or 'nothing'}"
        )
    restored_from = config.get("restoredFrom")
    point = resource.prop("restorePointInTime")
    if restored_from is not None and point is not None:
        wanted, actual = _point_in_time(restored_from), _point_in_time(str(point))
        if wanted is None or actual is None or wanted != actual:
            problems.append(
                f"{resource.name}: restores to {point}, not to the recorded restore point "
                f"zdd:restoredFrom {restored_from}"
            )
    elif point is None:
        problems.append(f"{resource.name}: a point-in-time restore needs restorePointInTime")
    return problems


def check_primary_database_present(
    resources: Sequence[Resource], config: StackConfig
) -> list[Violation]:
    """Never deleted: a stack with a site keeps its primary database of the current
    generation (a resource the program stops declaring is deleted by the update)."""
    local_sites = [r for r in resources if _is_local_site(r)]
    azure_sites = [r for r in resources if r.type in WEB_APP_TYPES]
    problems: list[Violation] = []
    wanted = config.generation
    if local_sites:
        files = [r for r in resources if r.is_dynamic and r.name == PRIMARY_DB_FILE]
        if len(files) != 1:
            problems.append(
                Violation(f"the stack has {len(files)} primary database files, it needs one")
            )
        for file in files:
            name = PurePath(str(file.prop("path", ""))).name
            match = _PRIMARY_FILE_RE.match(name)
            if match is None or (wanted is not None and int(match.group(1)) != wanted):
                problems.append(
                    Violation(
                        f"{file.name}: {name} is not generation {wanted} of the primary database",
                        file.urn,
                    )
                )
    if azure_sites:
        primaries = [
            r for r in resources if r.type == SQL_DATABASE and _database_role(r) == "primary"
        ]
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


# -- backup retention of 7 days or more (Azure) ------------------------------------------------


def check_backup_retention(resource: Resource, _config: StackConfig) -> list[str]:
    if resource.type != RETENTION:
        return []
    days = resource.prop("retentionDays")
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


# -- web apps: HTTPS only, TLS 1.2 or newer, FTPS disabled (Azure) -----------------------------


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


# -- the SQL server is not open to every address (Azure) ---------------------------------------


def check_sql_firewall(resource: Resource, config: StackConfig) -> list[str]:
    if resource.type not in (FIREWALL_RULE, IPV6_FIREWALL_RULE):
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


# -- exactly one origin takes public traffic at a time -----------------------------------------


def check_front_door_active_origin(resource: Resource, _config: StackConfig) -> list[str]:
    """Local: the front door's `active` origin is one of its `origins`, and the primary is
    always among them."""
    if not _is_local_front_door(resource):
        return []
    origins = resource.prop("origins", {})
    active = resource.prop("active")
    if not isinstance(origins, Mapping) or not origins:
        return [f"{resource.name}: the front door has no origins"]
    problems = []
    if active not in origins:
        problems.append(
            f"{resource.name}: active origin {active!r} is not one of its origins "
            f"({', '.join(sorted(origins))})"
        )
    if "primary" not in origins:
        problems.append(f"{resource.name}: the primary is not an origin of the front door")
    return problems


def _origin_group(resource: Resource) -> str:
    group = resource.prop("originGroupName")
    if group:
        return str(group)
    urns = resource.dependencies.get("originGroupName", ())
    return urns[0] if urns else "?"


def check_one_public_origin(resources: Sequence[Resource], _config: StackConfig) -> list[Violation]:
    """Local: one front door (`front-door-active-origin` checks its active origin). Azure: in
    every origin group (the public one, and the preview one that only holds the primary)
    exactly one origin is enabled."""
    problems: list[Violation] = []
    doors = [r for r in resources if _is_local_front_door(r)]
    if any(_is_local_site(r) for r in resources) and len(doors) != 1:
        problems.append(Violation(f"the stack has {len(doors)} front doors, it needs exactly one"))
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
    if resource.is_dynamic and resource.name == CLONE_DB_FILE:
        return _check_local_clone_database(resource, config)
    if resource.type == SQL_DATABASE and _database_role(resource) == "clone":
        return _check_azure_clone_database(resource, config)
    return []


def _check_local_clone_database(resource: Resource, config: StackConfig) -> list[str]:
    source = resource.prop("source")
    if not source:
        return [f"{resource.name}: the clone's database has no source: it must copy the primary's"]
    source_path = PurePath(str(source))
    match = _PRIMARY_FILE_RE.match(source_path.name)
    if match is None:
        return [f"{resource.name}: copies {source}, which is not the primary database"]
    problems = []
    wanted = config.generation
    if wanted is not None and int(match.group(1)) != wanted:
        problems.append(
            f"{resource.name}: copies generation {match.group(1)} of the primary database, the "
            f"current one is generation {wanted}"
        )
    if config.state_dir is not None and source_path.parent != config.state_dir:
        problems.append(f"{resource.name}: copies {source}, outside zdd:stateDir")
    if PurePath(str(resource.prop("path", ""))) == source_path:
        problems.append(f"{resource.name}: the copy would overwrite the primary database")
    return problems


def _check_azure_clone_database(resource: Resource, config: StackConfig) -> list[str]:
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


# -- the pack ----------------------------------------------------------------------------------

POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(
        "clone-read-only",
        "The clone runs ReadOnly unless the stack acknowledges data loss "
        "(zdd:mode read-write and zdd:acceptDataLoss true).",
        check=check_clone_read_only,
    ),
    PolicySpec(
        "primary-database-protected",
        "The primary database is protected and never deleted or replaced outside a rollback "
        "with database.",
        check=check_primary_database_protected,
    ),
    PolicySpec(
        "primary-database-present",
        "The stack keeps its primary database of the current generation (never deleted).",
        stack_check=check_primary_database_present,
    ),
    PolicySpec(
        "backup-retention-7-days",
        f"Short-term backup retention of {MIN_BACKUP_RETENTION_DAYS} days or more.",
        check=check_backup_retention,
    ),
    PolicySpec(
        "backup-retention-covers-primary",
        f"Every primary database has a backup retention of {MIN_BACKUP_RETENTION_DAYS} days "
        "or more.",
        stack_check=check_backup_retention_covers_primary,
    ),
    PolicySpec("web-app-https-only", "Web apps accept HTTPS only.", check=check_https_only),
    PolicySpec("web-app-tls-1-2", "Web apps require TLS 1.2 or newer.", check=check_web_app_tls),
    PolicySpec(
        "web-app-ftps-disabled", "Web apps have FTP(S) disabled.", check=check_ftps_disabled
    ),
    PolicySpec(
        "sql-server-not-open-to-all",
        "The SQL server's firewall is not open to every address.",
        check=check_sql_firewall,
    ),
    PolicySpec(
        "sql-server-tls-1-2",
        "The SQL server requires TLS 1.2 or newer.",
        check=check_sql_server_tls,
    ),
    PolicySpec(
        "front-door-active-origin",
        "The front door sends public traffic to exactly one of its origins.",
        check=check_front_door_active_origin,
    ),
    PolicySpec(
        "one-public-origin",
        "Exactly one origin takes public traffic at a time.",
        stack_check=check_one_public_origin,
    ),
    PolicySpec(
        "clone-database-is-copy",
        "The clone's database is a copy of the primary's.",
        check=check_clone_database_is_copy,
    ),
)


def policy_named(name: str) -> PolicySpec:
    for spec in POLICIES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def evaluate(
    resources: Iterable[Resource], config: StackConfig
) -> dict[str, list[str | Violation]]:
    """Every policy over `resources` (resource checks on each, stack checks on all): the
    violations by policy name, only for policies that have some."""
    resources = list(resources)
    found: dict[str, list[str | Violation]] = {}
    for spec in POLICIES:
        problems: list[str | Violation] = []
        if spec.check is not None:
            for resource in resources:
                problems.extend(spec.check(resource, config))
        if spec.stack_check is not None:
            problems.extend(spec.stack_check(resources, config))
        if problems:
            found[spec.name] = problems
    return found
