"""What the driver knows about the `azure` target: versions, a new stack's config, the drain signal.

- The site is the stack's app spec (`zdd:app`), as on the local target; its `releases` is a
  container image or an https package URL template. A version is deployable when it is well
  formed (`zdd.phases.is_valid_version`) and fits that template as an image tag or a URL path
  segment. Whether that image or package exists is not checked here: the clone/verification
  gates find out (the site does not answer healthy).
- A traffic switch is one change of the public route; the driver waits until Front Door has it
  on every edge, or, its `deploymentStatus` being advisory, until the change is accepted and
  old enough, then a settle time (`wait_switched`).
- The drain is judged from Azure Monitor, failing closed: Front Door's `OriginRequestCount`
  through the public endpoint, split by origin, must show no request to the origin for a quiet
  period of minutes that have data (`wait_origin_idle`); before the cutover the same query must
  show the primary's requests (`wait_counted`). docs/azure.md says what it cannot see.
- The restore point is a moment on Azure's clock, taken after the drain (`take_restore_point`);
  a deployment waits for a restorable primary database, a restore for a log backup that covers
  its point (`restorable_problem`, `wait_restorable`).
- The driver's own Azure credentials refresh for the whole deployment (`_credential`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from zdd.appspec import ReleaseKind
from zdd.console import Say
from zdd.environment import Environment
from zdd.errors import BadInput, GateFailed, RefusedTransition
from zdd.phases import MIN_BACKUP_RETENTION_DAYS
from zdd.targets import GateTimeouts, LogLocation, TargetOps, app_spec
from zdd.targets.azure_rehearsal import rehearsal_of

DEPLOYED = "Succeeded"
FAILED = "Failed"
STATUS_POLL_SECONDS = 15.0
# Often enough that the driver's heartbeat puts at least one request in every minute.
METRICS_POLL_SECONDS = 20.0
# "The metrics can take up to 3 minutes to get processed by Azure Monitor" (Front Door docs).
METRICS_DELAY_SECONDS = 180
# Requests the driver sends through the public endpoint to show that the metrics see an origin,
# and how long Azure Monitor may take to show them (its delay, and as much again).
HEARTBEATS_TO_COUNT = 5
COUNTED_WITHIN_SECONDS = 2 * METRICS_DELAY_SECONDS + 240
# Azure SQL: the first full backup of a new, copied or restored database "usually within 30
# minutes"; log backups "every 5 to 10 minutes" (automated backups docs). A restore point counts
# as covered 5 minutes after the slowest log backup interval.
FIRST_FULL_BACKUP_SECONDS = 1800
LOG_BACKUP_COVERED_SECONDS = 600 + 300
# Azure Database for PostgreSQL flexible server archives the write-ahead log when a file is
# ready to be archived (backup and restore docs), so a point can be up to 15 minutes from
# restorable: counted as covered 5 minutes after that.
WAL_ARCHIVED_COVERED_SECONDS = 900 + 300
RESTORABLE_POLL_SECONDS = 30.0
# Front Door propagates a configuration change to its edge in minutes, not seconds.
AZURE_TIMEOUTS = GateTimeouts(healthy=600.0, public_origin=1200.0, drained=1200.0)
# A Docker tag is at most 128 characters of these; the same characters are safe in a URL path.
_TAG_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PASSWORD_SYMBOLS = "-_.!#"  # none of them means anything in a SQL connection string
DEFAULT_SQL_ADMIN_LOGIN = "zddadmin"


def resolve_version(version: str, config: Mapping[str, str]) -> None:
    """A well-formed version is deployable if it fits the spec's image or package template."""
    spec = app_spec(config)
    if spec.release_kind is ReleaseKind.FOLDER:
        raise BadInput(
            f"app spec `releases` {spec.releases!r} is a folder on this machine: an Azure web "
            "app runs a container image (registry/site:{version}) or an https package URL"
        )
    if not _TAG_SAFE.match(version):
        raise BadInput(
            f"version {version!r} cannot be put into the app spec's `releases` "
            f"({spec.release_kind}): use at most 128 letters, digits, '.', '_' or '-'"
        )


def generate_password(length: int = 32, avoid: str = DEFAULT_SQL_ADMIN_LOGIN) -> str:
    """An Azure SQL administrator password: every character class, nothing the login contains."""
    alphabet = string.ascii_letters + string.digits + _PASSWORD_SYMBOLS
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, _PASSWORD_SYMBOLS)
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in group for c in password) for group in classes) and (
            avoid.lower() not in password.lower()
        ):
            return password


def _slug(stack: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")[:16].strip("-") or "site"


def initial_config(env: Environment, stack: str) -> dict[str, str]:
    """The Azure keys a new stack needs beside its app spec (`zdd init --app FILE`): every key
    has a default that `ZDD_AZURE_<KEY>` overrides, but the operator addresses, which have none.
    `sqlAdminPassword` is generated once here and must be stored as a secret
    (`zdd.stack.SECRET_KEYS`)."""
    del env  # nothing on the local machine belongs to an Azure stack
    prefix = os.environ.get("ZDD_AZURE_NAME_PREFIX") or f"zdd-{_slug(stack)}-{secrets.token_hex(3)}"
    login = os.environ.get("ZDD_AZURE_SQL_ADMIN_LOGIN") or DEFAULT_SQL_ADMIN_LOGIN
    values = {
        "azureLocation": os.environ.get("ZDD_AZURE_LOCATION") or "westeurope",
        "resourceGroupName": os.environ.get("ZDD_AZURE_RESOURCE_GROUP_NAME") or f"rg-{prefix}",
        "namePrefix": prefix,
        "appServiceSku": os.environ.get("ZDD_AZURE_APP_SERVICE_SKU") or "P0v3",
        "databaseSku": os.environ.get("ZDD_AZURE_DATABASE_SKU") or "S0",
        "backupRetentionDays": os.environ.get("ZDD_AZURE_BACKUP_RETENTION_DAYS")
        or str(MIN_BACKUP_RETENTION_DAYS),
        "cloneOwnPlan": "false",
        "sqlAdminLogin": login,
        "sqlAdminPassword": generate_password(avoid=login),
    }
    operators = os.environ.get("ZDD_AZURE_OPERATOR_IP_ADDRESSES")
    if not operators:
        raise BadInput(
            "an Azure stack needs ZDD_AZURE_OPERATOR_IP_ADDRESSES (the address this driver runs "
            "from): the preview endpoint and the apps' own addresses answer nobody else"
        )
    values["operatorIpAddresses"] = operators
    for key, variable in (
        ("migrationLogin", "ZDD_AZURE_MIGRATION_LOGIN"),
        ("containerRegistryId", "ZDD_AZURE_CONTAINER_REGISTRY_ID"),
        ("linuxRuntime", "ZDD_AZURE_LINUX_RUNTIME"),
        ("customDomain", "ZDD_AZURE_CUSTOM_DOMAIN"),
    ):
        if os.environ.get(variable):
            values[key] = os.environ[variable]
    return values


# -- Front Door: the switch and the drain, judged from Azure's own records ----------------


@dataclass(frozen=True)
class MetricPoint:
    """One minute of a metric: its start and its total (None: Azure has no data for it)."""

    start: datetime
    total: float | None


@dataclass(frozen=True)
class RouteState:
    """What Resource Manager says of a route: whether it accepted the last change
    (`provisioningState`), whether every edge has it (`deploymentStatus`, advisory: it can stay
    NotStarted for a change already live), and when it last changed (`systemData`)."""

    provisioning: str
    deployment: str
    modified: datetime | None


@dataclass(frozen=True)
class DatabaseBackups:
    """What Resource Manager says of a database's backups: the earliest point it can be
    restored to (None until its first full backup) and when it was created."""

    earliest_restore: datetime | None
    created: datetime | None


def on_postgres(database_id: str) -> bool:
    """The primary database is a PostgreSQL flexible server (its generation is a server)."""
    return "/microsoft.dbforpostgresql/flexibleservers/" in database_id.lower()


def backups_of(database_id: str, body: Mapping[str, Any]) -> DatabaseBackups:
    """A Resource Manager answer about the primary database, read as its backups: an Azure SQL
    database's `earliestRestoreDate` and `creationDate`, or a flexible server's
    `backup.earliestRestoreDate` and `systemData.createdAt`."""
    properties = body.get("properties") or {}
    if on_postgres(database_id):
        earliest = (properties.get("backup") or {}).get("earliestRestoreDate")
        created = (body.get("systemData") or {}).get("createdAt")
    else:
        earliest, created = properties.get("earliestRestoreDate"), properties.get("creationDate")
    return DatabaseBackups(
        earliest_restore=_moment(earliest) if earliest else None,
        created=_moment(created) if created else None,
    )


def _engine_words(database_id: str) -> tuple[str, str, int]:
    """(the service, how it backs up its log, seconds until a point is surely covered)."""
    if on_postgres(database_id):
        return (
            "Azure Database for PostgreSQL",
            "archives the write-ahead log as each file fills, up to 15 minutes apart",
            WAL_ARCHIVED_COVERED_SECONDS,
        )
    return "Azure SQL", "backs the log up every 5 to 10 minutes", LOG_BACKUP_COVERED_SECONDS


class AzureApi(Protocol):
    """What the gates read from Azure; `ArmApi` is the real one, tests pass fakes."""

    def route_state(self, route_id: str) -> RouteState: ...

    def origin_requests(
        self, profile_id: str, endpoint_host: str, start: datetime, end: datetime
    ) -> dict[str, list[MetricPoint]]:
        """Front Door's `OriginRequestCount` through one endpoint, per minute, split by origin
        host: the requests every edge forwarded (health probes are not requests)."""
        ...

    def database_backups(self, database_id: str) -> DatabaseBackups: ...

    def now(self) -> datetime:
        """Azure's clock (the `Date` of a Resource Manager answer), not the driver's."""
        ...


@dataclass(frozen=True)
class Clock:
    """Waiting, injectable: the real one sleeps, a test's advances virtual time."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


def wait_switched(
    api: AzureApi,
    route_id: str,
    origin: str,
    say: Say,
    *,
    floor: float,
    timeout: float,
    settle: float,
    clock: Clock = Clock(),
) -> datetime:
    """Wait until the public route's change is out, then `settle` seconds more; return when
    (Azure's clock) the drain may start counting.

    Out means `deploymentStatus` Succeeded, or, since that status is advisory (Microsoft's own
    example shows Succeeded provisioning with NotStarted deployment), the change accepted
    (`provisioningState` Succeeded) and `floor` seconds old: after that the fail-closed drain
    decides, counting from then. Only a change Azure never accepts runs into `timeout`."""
    started = clock.monotonic()
    while True:
        route = api.route_state(route_id)
        if FAILED in (route.provisioning, route.deployment):
            raise GateFailed(
                f"Front Door reports the switch to the {origin} as Failed (provisioningState "
                f"{route.provisioning}, deploymentStatus {route.deployment} of {route_id}); "
                "nothing else was changed. Check the profile in the portal, then `zdd resume`, "
                "or `zdd abort`."
            )
        now = api.now()
        if route.provisioning == DEPLOYED and route.deployment == DEPLOYED:
            say(f"gate: switch to the {origin} deployed on every edge; settling for {settle:.0f}s")
            break
        waited = clock.monotonic() - started
        age = (now - route.modified).total_seconds() if route.modified else waited
        if route.provisioning == DEPLOYED and age >= floor:
            say(
                f"gate: the switch to the {origin} is {age:.0f}s old and Front Door still says "
                f"{route.deployment}; that status is advisory, the drain decides from now on"
            )
            break
        if waited >= timeout:
            raise GateFailed(
                f"Azure has not accepted the switch to the {origin} after {waited:.0f}s "
                f"(provisioningState {route.provisioning}, deploymentStatus "
                f"{route.deployment}); traffic stays where Front Door has it and nothing else "
                "was changed. Retry with `zdd resume`, or `zdd abort`."
            )
        say(
            f"gate: Front Door is deploying the switch to the {origin} "
            f"({route.provisioning}/{route.deployment}, {age:.0f}s old)"
        )
        clock.sleep(STATUS_POLL_SECONDS)
    clock.sleep(settle)
    return now


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


@dataclass(frozen=True)
class FrontDoorRefs:
    """What the drain reads about the stack's Front Door (the `front_door` stack output)."""

    profile_id: str
    endpoint_host: str
    origin_hosts: Mapping[str, str]

    def host(self, origin: str) -> str:
        host = self.origin_hosts.get(origin)
        if not host:
            raise GateFailed(f"drain check: the stack's outputs name no {origin} origin")
        return host


@dataclass(frozen=True)
class DrainReading:
    """The minutes from the switch that Azure Monitor has surely processed, as one origin saw
    them: requests in all, the last minute with any, and how long it has been quiet since."""

    count: int
    last_busy: datetime | None
    quiet_seconds: float
    unknown_minutes: int


def read_drain(api: AzureApi, refs: FrontDoorRefs, origin: str, since: datetime) -> DrainReading:
    """Fail-closed reading of the drain: a minute counts as quiet only when Azure Monitor has a
    data point in it (for this origin, or for the one with the traffic, which the driver's
    heartbeat keeps busy); one without any data starts the quiet period again after it. An
    origin name the stack does not know means the evidence cannot be read at all."""
    start = _ceil_minute(since)
    end = (api.now() - timedelta(seconds=METRICS_DELAY_SECONDS)).replace(second=0, microsecond=0)
    if end <= start:
        return DrainReading(0, None, 0.0, 0)
    series = api.origin_requests(refs.profile_id, refs.endpoint_host, start, end)
    strangers = sorted(set(series) - set(refs.origin_hosts.values()))
    if strangers:
        raise GateFailed(
            f"drain check: Azure Monitor names origins {strangers}, not this stack's "
            f"{sorted(refs.origin_hosts.values())}; the drain cannot be judged, so nothing was "
            "touched. See docs/azure.md (to confirm on the first real run)."
        )
    host = refs.host(origin)
    totals: dict[datetime, dict[str, float]] = {}
    for name, points in series.items():
        for point in points:
            if point.total is not None and start <= point.start < end:
                totals.setdefault(point.start, {})[name] = point.total
    count, last_busy, quiet_from, unknown = 0, None, start, 0
    minute = start
    while minute < end:
        seen = totals.get(minute)
        following = minute + timedelta(minutes=1)
        if seen is None:
            unknown += 1
            quiet_from = following
        elif seen.get(host, 0) > 0:
            count += int(seen[host])
            last_busy, quiet_from = minute, following
        minute = following
    return DrainReading(count, last_busy, (end - quiet_from).total_seconds(), unknown)


def wait_origin_idle(
    api: AzureApi,
    refs: FrontDoorRefs,
    origin: str,
    since: datetime,
    say: Say,
    heartbeat: Callable[[], None],
    *,
    quiet: float,
    timeout: float,
    clock: Clock = Clock(),
) -> None:
    """Rules 2 and 5 of docs/design.md on Azure: `origin` is drained once the public endpoint
    forwarded it no request, from any edge, for `quiet` seconds of minutes Azure Monitor has
    data for, after `since`. `heartbeat` sends a request through the public endpoint (to the
    origin with the traffic) so that every minute has data even on a quiet site."""
    started = clock.monotonic()
    while True:
        reading = read_drain(api, refs, origin, since)
        if reading.quiet_seconds >= quiet:
            say(f"gate: no request reached the {origin} from any edge for {quiet:.0f}s")
            return
        if reading.last_busy is not None:
            say(
                f"gate: {reading.count} request(s) reached the {origin} up to "
                f"{reading.last_busy:%H:%M} UTC; waiting for {quiet:.0f}s without any"
            )
        waited = clock.monotonic() - started
        if waited >= timeout:
            why = (
                f"{reading.count} request(s) since the switch"
                if reading.count
                else f"{reading.unknown_minutes} minute(s) without any data in Azure Monitor"
            )
            raise GateFailed(
                f"drain check: the {origin} was not shown idle by Front Door's metrics after "
                f"{waited:.0f}s ({why}); the {origin} was not touched. Retry with `zdd resume`."
            )
        heartbeat()
        clock.sleep(METRICS_POLL_SECONDS)


def wait_counted(
    api: AzureApi,
    refs: FrontDoorRefs,
    origin: str,
    say: Say,
    heartbeat: Callable[[], None],
    *,
    timeout: float,
    clock: Clock = Clock(),
) -> None:
    """Before traffic leaves `origin`: the same query the drain will use shows requests the
    driver sends it now through the public endpoint. A filter that matches nothing would read
    as a drained origin; here it stops the deployment before anything moves."""
    since = api.now().replace(second=0, microsecond=0)
    host = refs.host(origin)
    started = clock.monotonic()
    for _ in range(HEARTBEATS_TO_COUNT):
        heartbeat()
    while True:
        end = api.now() + timedelta(minutes=1)
        series = api.origin_requests(refs.profile_id, refs.endpoint_host, since, end)
        if any(p.total for p in series.get(host, []) if p.start >= since):
            say(f"gate: Front Door's metrics see the requests to the {origin} ({host})")
            return
        waited = clock.monotonic() - started
        if waited >= timeout:
            raise GateFailed(
                f"Front Door's metrics show none of the requests sent through "
                f"{refs.endpoint_host} to the {origin} after {waited:.0f}s (Origin {host!r}; "
                f"seen: {sorted(series) or 'nothing'}): the drain could not be judged, so "
                "traffic was not moved. Retry with `zdd resume`, or `zdd abort`."
            )
        say(f"gate: waiting for Azure Monitor to show the requests to the {origin}")
        heartbeat()
        clock.sleep(METRICS_POLL_SECONDS)


def _front_door(outputs: Mapping[str, Any]) -> Mapping[str, Any]:
    front_door = outputs.get("front_door")
    if not isinstance(front_door, Mapping) or not front_door.get("public_route_id"):
        raise GateFailed(
            "the stack has no Front Door outputs yet (front_door): run `zdd resume` to apply "
            "the current phase first"
        )
    return front_door


def _refs(front_door: Mapping[str, Any]) -> FrontDoorRefs:
    return FrontDoorRefs(
        profile_id=str(front_door["profile_id"]),
        endpoint_host=str(front_door.get("public_endpoint_host") or ""),
        origin_hosts={str(k): str(v) for k, v in (front_door.get("origin_hosts") or {}).items()},
    )


def _heartbeat(outputs: Mapping[str, Any], front_door: Mapping[str, Any]) -> Callable[[], None]:
    """One request through the public endpoint; one that fails is just a minute less data."""
    url = f"{outputs.get('public_url')}{front_door.get('heartbeat_path') or '/'}"

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=10, headers={"Cache-Control": "no-cache"})

    return send


def switch_gate(
    outputs: Mapping[str, Any], origin: str, say: Say, api: AzureApi | None = None
) -> datetime:
    """`wait_switched` for the stack's public route (TargetOps.wait_switched)."""
    front_door = _front_door(outputs)
    return wait_switched(
        api or arm_api(),
        str(front_door["public_route_id"]),
        origin,
        say,
        floor=float(front_door.get("switch_floor_seconds") or 1200),
        timeout=float(front_door.get("switch_timeout_seconds") or 2700),
        settle=float(front_door.get("settle_seconds") or 240),
    )


def drain_gate(
    outputs: Mapping[str, Any],
    origin: str,
    say: Say,
    since: datetime,
    api: AzureApi | None = None,
    clock: Clock = Clock(),
) -> None:
    """`wait_origin_idle` for one of the stack's origins (TargetOps.wait_origin_idle). Edges that
    apply the switch late still count, up to the documented propagation time."""
    front_door = _front_door(outputs)
    quiet = float(front_door.get("quiet_seconds") or 300)
    propagation = float(front_door.get("switch_timeout_seconds") or 2700)
    wait_origin_idle(
        api or arm_api(),
        _refs(front_door),
        origin,
        since,
        say,
        _heartbeat(outputs, front_door),
        quiet=quiet,
        timeout=propagation + quiet + METRICS_DELAY_SECONDS,
        clock=clock,
    )


def count_gate(
    outputs: Mapping[str, Any],
    origin: str,
    say: Say,
    api: AzureApi | None = None,
    clock: Clock = Clock(),
) -> None:
    """`wait_counted` for one of the stack's origins (TargetOps.prove_counted)."""
    front_door = _front_door(outputs)
    wait_counted(
        api or arm_api(),
        _refs(front_door),
        origin,
        say,
        _heartbeat(outputs, front_door),
        timeout=COUNTED_WITHIN_SECONDS,
        clock=clock,
    )


def in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    """Requests Front Door forwarded to `origin` over the last quiet period (one look, no
    waiting; the gates use `drain_gate`)."""
    front_door = _front_door(outputs)
    api = arm_api()
    quiet = float(front_door.get("quiet_seconds") or 300)
    since = api.now() - timedelta(seconds=quiet + METRICS_DELAY_SECONDS + 60)
    return read_drain(api, _refs(front_door), origin, since).count


def take_restore_point(clock: Clock = Clock(), api: AzureApi | None = None) -> str:
    """The restore point on Azure's clock, after the drain, rounded up to the whole second
    after it (the `Date` Azure answers with is truncated to the second), and returned only once
    Azure's clock has passed it, so that no change the deploy update makes can fall before it
    and every write acknowledged before the drain is behind it."""
    api = api or arm_api()
    point = api.now().replace(microsecond=0) + timedelta(seconds=1)
    while api.now() <= point:
        clock.sleep(0.5)
    return point.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- restore points Azure SQL can restore ---------------------------------------------------


def _database_id(outputs: Mapping[str, Any]) -> str:
    database_id = outputs.get("primary_database_id")
    if not database_id:
        raise GateFailed(
            "the stack has no primary_database_id output yet: run `zdd resume` to apply the "
            "current phase first"
        )
    return str(database_id)


def restorable_problem(outputs: Mapping[str, Any], api: AzureApi | None = None) -> str | None:
    """Why a deployment may not start yet: the primary database has no restorable point at
    all (Azure SQL takes a new, copied or restored database's first full backup "usually
    within 30 minutes"), with when to try again; None when it has one."""
    api = api or arm_api()
    database_id = _database_id(outputs)
    backups = api.database_backups(database_id)
    if backups.earliest_restore is not None:
        return None
    now = api.now()
    ready = (backups.created or now) + timedelta(seconds=FIRST_FULL_BACKUP_SECONDS)
    minutes = max(1, math.ceil((ready - now).total_seconds() / 60))
    return (
        f"the primary database has no restorable point yet ({_engine_words(database_id)[0]} "
        "backs up a new, copied "
        f"or restored database for the first time within about 30 minutes of its creation"
        f"{f' at {backups.created:%H:%M} UTC' if backups.created else ''}), so a restore point "
        f"taken now could not be restored; deploy again after {ready:%H:%M} UTC (in about "
        f"{minutes} minute(s))"
    )


def wait_restorable(
    outputs: Mapping[str, Any],
    restore_point: str,
    say: Say,
    api: AzureApi | None = None,
    clock: Clock = Clock(),
) -> None:
    """Before a point-in-time restore: the restore point lies within the database's restorable
    range and a log backup has surely covered it (Azure SQL takes one every 5 to 10 minutes; a
    restore to a later moment is refused with "No backups were found"). Waits, with progress,
    until `LOG_BACKUP_COVERED_SECONDS` after the point on Azure's clock; refuses (exit 3) a
    point Azure cannot restore at all."""
    api = api or arm_api()
    point = datetime.fromisoformat(restore_point.replace("Z", "+00:00"))
    database_id = _database_id(outputs)
    backups = api.database_backups(database_id)
    if backups.earliest_restore is None or backups.earliest_restore > point:
        earliest = (
            f"{backups.earliest_restore:%Y-%m-%d %H:%M:%S} UTC"
            if backups.earliest_restore
            else "none yet"
        )
        raise RefusedTransition(
            f"restore point {restore_point} is before the primary database's earliest "
            f"restorable point ({earliest}): {_engine_words(database_id)[0]} cannot restore "
            "it; nothing was changed. "
            "`zdd rollback --code-only` keeps the database as it is"
        )
    service, cadence, covering = _engine_words(database_id)
    covered = point + timedelta(seconds=covering)
    while (left := (covered - api.now()).total_seconds()) > 0:
        say(
            f"waiting {left:.0f}s more for a log backup to cover restore point {restore_point} "
            f"({service} {cadence})"
        )
        clock.sleep(min(left, RESTORABLE_POLL_SECONDS))


# -- the real Azure API (Resource Manager over HTTPS, with the user's credentials) ---------

ARM = "https://management.azure.com"
ARM_SCOPE = f"{ARM}/.default"
# The audience Entra ID expects of a federated credential's token.
OIDC_AUDIENCE = "api://AzureADTokenExchange"
CDN_API_VERSION = "2024-02-01"
METRICS_API_VERSION = "2023-10-01"
SQL_API_VERSION = "2021-11-01"
# The flexible server API the program declares with (pulumi-azure-native 3.29).
POSTGRES_API_VERSION = "2025-08-01"


def _on(name: str) -> bool:
    return os.environ.get(name, "").lower() == "true"


def github_oidc_token(request_url: str, request_token: str) -> str:
    """A fresh OIDC token from GitHub Actions' token service (valid minutes, asked for again
    whenever Entra ID needs a new assertion)."""
    response = httpx.get(
        request_url,
        params={"audience": OIDC_AUDIENCE},
        headers={"Authorization": f"Bearer {request_token}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["value"])


def _credential() -> Any:
    """The user's Azure credentials, chosen from the same ARM_* variables the azure-native
    provider reads, always as a credential that renews itself: a deployment that waits on
    Front Door can outlast any single token by hours.

    - ARM_CLIENT_SECRET: the service principal's secret;
    - ARM_USE_MSI: the runner's managed identity (ARM_CLIENT_ID for a user-assigned one);
    - ARM_USE_OIDC on Azure Pipelines (ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID and
      SYSTEM_ACCESSTOKEN): `AzurePipelinesCredential`, a new OIDC token per assertion;
    - ARM_USE_OIDC on GitHub Actions (ARM_OIDC_REQUEST_URL/TOKEN or GitHub's
      ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN): a client assertion that asks GitHub again each time;
    - else whatever `DefaultAzureCredential` finds (`az login` on an operator's machine).
    A static ARM_OIDC_TOKEN alone expires within minutes: refused, with what to use instead."""
    from azure.identity import (
        AzurePipelinesCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    env = os.environ
    client, tenant = env.get("ARM_CLIENT_ID", ""), env.get("ARM_TENANT_ID", "")
    if client and tenant and env.get("ARM_CLIENT_SECRET"):
        return ClientSecretCredential(tenant, client, env["ARM_CLIENT_SECRET"])
    if _on("ARM_USE_MSI"):
        return ManagedIdentityCredential(client_id=client or None)
    if _on("ARM_USE_OIDC") and client and tenant:
        connection = env.get("ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID")
        if connection and env.get("SYSTEM_ACCESSTOKEN"):
            return AzurePipelinesCredential(
                tenant_id=tenant,
                client_id=client,
                service_connection_id=connection,
                system_access_token=env["SYSTEM_ACCESSTOKEN"],
            )
        url = env.get("ARM_OIDC_REQUEST_URL") or env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
        token = env.get("ARM_OIDC_REQUEST_TOKEN") or env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if url and token:
            return ClientAssertionCredential(
                tenant, client, functools.partial(github_oidc_token, url, token)
            )
        if env.get("ARM_OIDC_TOKEN"):
            raise BadInput(
                "ARM_OIDC_TOKEN is a single OIDC token that expires within minutes, and a "
                "deployment waits on Front Door for much longer: use the runner's managed "
                "identity (ARM_USE_MSI), or let the credential ask for fresh tokens "
                "(Azure Pipelines: ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID and "
                "SYSTEM_ACCESSTOKEN; GitHub Actions: permission id-token: write); see "
                "docs/ci/. Nothing was changed"
            )
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def check_credentials() -> None:
    """Fail in one line, before anything changes, when no Azure credentials are at hand."""
    from azure.core.exceptions import ClientAuthenticationError

    # The SDK logs every credential it tried; the failure is reported here in one line.
    logging.getLogger("azure.identity").setLevel(logging.CRITICAL)
    try:
        _credential().get_token(ARM_SCOPE)
    except ClientAuthenticationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(
            "no Azure credentials: run `az login`, or set ARM_CLIENT_ID, ARM_CLIENT_SECRET and "
            f"ARM_TENANT_ID (a service principal); nothing was changed ({first[:160]})"
        ) from None


class ArmApi:
    """`AzureApi` over the Resource Manager REST API."""

    def __init__(self) -> None:
        self._credential = _credential()
        self._client = httpx.Client(base_url=ARM, timeout=30)
        self._last_date: datetime | None = None

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        token = self._credential.get_token(ARM_SCOPE).token
        try:
            response = self._client.get(
                path, params=params, headers={"Authorization": f"Bearer {token}"}
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise GateFailed(f"Azure Resource Manager: {path}: {exc}") from None
        self._last_date = parsedate_to_datetime(response.headers["Date"])
        result: dict[str, Any] = response.json()
        return result

    def route_state(self, route_id: str) -> RouteState:
        body = self._get(route_id, {"api-version": CDN_API_VERSION})
        properties = body.get("properties", {})
        modified = (body.get("systemData") or {}).get("lastModifiedAt")
        return RouteState(
            provisioning=str(properties.get("provisioningState") or "Unknown"),
            deployment=str(properties.get("deploymentStatus") or "NotStarted"),
            modified=_moment(modified) if modified else None,
        )

    def origin_requests(
        self, profile_id: str, endpoint_host: str, start: datetime, end: datetime
    ) -> dict[str, list[MetricPoint]]:
        body = self._get(
            f"{profile_id}/providers/Microsoft.Insights/metrics",
            {
                "api-version": METRICS_API_VERSION,
                "metricnames": "OriginRequestCount",
                "aggregation": "Total",
                "interval": "PT1M",
                "timespan": f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
                # The public endpoint only (the preview reaches the primary too), split by origin.
                "$filter": f"Endpoint eq '{endpoint_host}' and Origin eq '*'",
            },
        )
        series: dict[str, list[MetricPoint]] = {}
        for metric in body.get("value", []):
            for timeseries in metric.get("timeseries", []):
                names = {
                    str(d.get("name", {}).get("value", "")).lower(): str(d.get("value"))
                    for d in timeseries.get("metadatavalues", [])
                }
                points = series.setdefault(names.get("origin", "?"), [])
                for data in timeseries.get("data", []):
                    points.append(MetricPoint(_moment(data["timeStamp"]), data.get("total")))
        return series

    def database_backups(self, database_id: str) -> DatabaseBackups:
        version = POSTGRES_API_VERSION if on_postgres(database_id) else SQL_API_VERSION
        return backups_of(database_id, self._get(database_id, {"api-version": version}))

    def now(self) -> datetime:
        self._get("/subscriptions", {"api-version": "2022-12-01"})
        assert self._last_date is not None
        return self._last_date


def _moment(text: str) -> datetime:
    """An ISO-8601 time as Resource Manager writes it (with Z, and up to 7 decimals)."""
    moment = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def log_of(_env: Environment, stack: str, config: Mapping[str, str], component: str) -> LogLocation:
    """App Service keeps a web app's output (its log stream); Front Door its access log in the
    diagnostic settings' Log Analytics workspace, if the profile has one."""
    group = config.get("resourceGroupName", "<resource group>")
    if component in ("postgresql", "postgresql-clone"):
        where = (
            f"the database of stack {stack} is a managed Azure database server: its server log "
            f"is in the server's diagnostic settings and `az postgres flexible-server "
            f"server-logs list --resource-group {group} --server-name <server>`"
        )
    elif component == "frontdoor":
        where = (
            f"the front door of stack {stack} is Azure Front Door: its access log goes to the "
            f"Log Analytics workspace of its diagnostic settings (resource group {group})"
        )
    else:
        app = f"{config.get('namePrefix', '<namePrefix>')}-{component}"
        where = (
            f"the {component} of stack {stack} is App Service web app {app}: its log is the App "
            f"Service log stream, `az webapp log tail --resource-group {group} --name {app}`"
        )
    return LogLocation(component, None, where)


def arm_api() -> AzureApi:
    return ArmApi()


AZURE = TargetOps(
    name="azure",
    resolve_version=resolve_version,
    initial_config=initial_config,
    in_flight=in_flight,
    timeouts=AZURE_TIMEOUTS,
    check_ready=check_credentials,
    wait_switched=switch_gate,
    wait_origin_idle=drain_gate,
    prove_counted=count_gate,
    take_restore_point=lambda: take_restore_point(),
    restorable_problem=restorable_problem,
    wait_restorable=wait_restorable,
    log_of=log_of,
    rehearsal=rehearsal_of,
)
