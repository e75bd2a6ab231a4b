"""What the driver knows about the `azure` target: versions, a new stack's config, the drain signal.

- The site is the stack's app spec (`zdd:app`), as on the local target; its `releases` is a
  container image or an https package URL template. A version is deployable when it is well
  formed (`zdd.phases.is_valid_version`) and fits that template as an image tag or a URL path
  segment. Whether that image or package exists is not checked here: the clone/verification
  gates find out (the site does not answer healthy).
- A traffic switch is one change of the public route; the driver polls its `deploymentStatus`
  until Front Door has it on every edge, then waits a settle time (`wait_switched`).
- The drain is judged from Azure Monitor: Front Door's `OriginRequestCount` for the origin,
  from every edge, must stay at zero for a quiet period (`wait_origin_idle`). docs/azure.md
  says what this evidence cannot see.
- The restore point is a moment on Azure's clock, taken after the drain (`take_restore_point`).
"""

from __future__ import annotations

import logging
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
from zdd.environment import Environment
from zdd.errors import BadInput, GateFailed
from zdd.phases import MIN_BACKUP_RETENTION_DAYS
from zdd.targets import GateTimeouts, LogLocation, TargetOps, app_spec

Say = Callable[[str], None]
DEPLOYED = "Succeeded"
STATUS_POLL_SECONDS = 15.0
METRICS_POLL_SECONDS = 60.0
# "The metrics can take up to 3 minutes to get processed by Azure Monitor" (Front Door docs).
METRICS_DELAY_SECONDS = 180
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


class AzureApi(Protocol):
    """What the gates read from Azure; `ArmApi` is the real one, tests pass fakes."""

    def deployment_status(self, resource_id: str) -> str:
        """A Front Door resource's `deploymentStatus` (NotStarted, InProgress, Succeeded,
        Failed): Succeeded once every edge has its last change."""
        ...

    def origin_requests(
        self, profile_id: str, origin_host: str, start: datetime, end: datetime
    ) -> list[MetricPoint]:
        """Front Door's `OriginRequestCount` for one origin, per minute: the requests every
        edge forwarded to it (health probes are not requests)."""
        ...

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
    timeout: float,
    settle: float,
    clock: Clock = Clock(),
) -> datetime:
    """Wait until Front Door reports the public route's change deployed on every edge, then
    `settle` seconds more; return when (Azure's clock) the change was confirmed everywhere.

    Front Door applies a change edge by edge ("up to 20 minutes", queued changes about 40:
    Front Door FAQ); the drain is judged only after this, and a timeout changes nothing."""
    started = clock.monotonic()
    status = api.deployment_status(route_id)
    while status != DEPLOYED:
        if status == "Failed":
            raise GateFailed(
                f"Front Door reports the switch to the {origin} as Failed (deploymentStatus of "
                f"{route_id}); nothing else was changed. Check the profile in the portal, then "
                "`zdd resume`, or `zdd abort`."
            )
        waited = clock.monotonic() - started
        if waited >= timeout:
            raise GateFailed(
                f"Front Door has not deployed the switch to the {origin} on every edge after "
                f"{waited:.0f}s (deploymentStatus {status}); traffic stays where Front Door has "
                "it and nothing else was changed. Retry with `zdd resume`, or `zdd abort`."
            )
        say(f"gate: Front Door is deploying the switch to the {origin} ({status}, {waited:.0f}s)")
        clock.sleep(STATUS_POLL_SECONDS)
        status = api.deployment_status(route_id)
    confirmed = api.now()
    say(f"gate: switch to the {origin} deployed on every edge; settling for {settle:.0f}s")
    clock.sleep(settle)
    return confirmed


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def origin_requests_since(
    api: AzureApi, profile_id: str, origin_host: str, since: datetime
) -> tuple[int, datetime | None, datetime]:
    """Requests forwarded to the origin in the whole minutes from `since` that Azure Monitor
    has surely processed ("up to 3 minutes": Front Door docs): (count, start of the last minute
    that had any, end of what was judged)."""
    start = _ceil_minute(since)
    end = (api.now() - timedelta(seconds=METRICS_DELAY_SECONDS)).replace(second=0, microsecond=0)
    if end <= start:
        return 0, None, start
    count, last_busy = 0, None
    for point in api.origin_requests(profile_id, origin_host, start, end):
        if point.start < start or point.start + timedelta(minutes=1) > end:
            continue
        if point.total:  # no data for a minute: Front Door forwarded nothing in it
            count += int(point.total)
            last_busy = max(last_busy or point.start, point.start)
    return count, last_busy, end


def wait_origin_idle(
    api: AzureApi,
    profile_id: str,
    origin_host: str,
    origin: str,
    since: datetime,
    say: Say,
    *,
    quiet: float,
    timeout: float,
    clock: Clock = Clock(),
) -> None:
    """Rules 2 and 5 of docs/design.md on Azure: `origin` is drained once Front Door forwarded
    it no request, from any edge, for `quiet` seconds after `since` (the switch confirmed
    everywhere). A minute with requests starts the quiet period again after it."""
    started = clock.monotonic()
    while True:
        count, last_busy, judged_until = origin_requests_since(api, profile_id, origin_host, since)
        if last_busy is not None:
            say(
                f"gate: {count} request(s) reached the {origin} up to {last_busy:%H:%M} UTC; "
                f"waiting for {quiet:.0f}s without any"
            )
            since = last_busy + timedelta(minutes=1)
        elif (judged_until - since).total_seconds() >= quiet:
            say(f"gate: no request reached the {origin} from any edge for {quiet:.0f}s")
            return
        waited = clock.monotonic() - started
        if waited >= timeout:
            raise GateFailed(
                f"drain check: the {origin} still got requests from Front Door after "
                f"{waited:.0f}s ({count} in the last check); the {origin} was not touched. "
                "Retry with `zdd resume`."
            )
        clock.sleep(METRICS_POLL_SECONDS)


def _front_door(outputs: Mapping[str, Any]) -> Mapping[str, Any]:
    front_door = outputs.get("front_door")
    if not isinstance(front_door, Mapping) or not front_door.get("public_route_id"):
        raise GateFailed(
            "the stack has no Front Door outputs yet (front_door): run `zdd resume` to apply "
            "the current phase first"
        )
    return front_door


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
        timeout=float(front_door.get("switch_timeout_seconds") or 2700),
        settle=float(front_door.get("settle_seconds") or 240),
    )


def drain_gate(
    outputs: Mapping[str, Any],
    origin: str,
    say: Say,
    since: datetime,
    api: AzureApi | None = None,
) -> None:
    """`wait_origin_idle` for one of the stack's origins (TargetOps.wait_drained)."""
    front_door = _front_door(outputs)
    host = front_door.get("origin_hosts", {}).get(origin)
    if not host:
        raise GateFailed(f"drain check: the stack's outputs name no {origin} origin")
    quiet = float(front_door.get("quiet_seconds") or 300)
    wait_origin_idle(
        api or arm_api(),
        str(front_door["profile_id"]),
        str(host),
        origin,
        since,
        say,
        quiet=quiet,
        timeout=max(AZURE_TIMEOUTS.drained, 2 * (quiet + METRICS_DELAY_SECONDS)),
    )


def in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    """Requests Front Door forwarded to `origin` over the last quiet period (one look, no
    waiting; the gates use `drain_gate`)."""
    front_door = _front_door(outputs)
    api = arm_api()
    quiet = float(front_door.get("quiet_seconds") or 300)
    since = api.now() - timedelta(seconds=quiet + METRICS_DELAY_SECONDS + 60)
    host = str(front_door.get("origin_hosts", {}).get(origin, ""))
    return origin_requests_since(api, str(front_door["profile_id"]), host, since)[0]


def take_restore_point(clock: Clock = Clock(), api: AzureApi | None = None) -> str:
    """Issue 10: the restore point on Azure's clock, after the drain, rounded up to the whole
    second after it (the `Date` Azure answers with is truncated to the second), and returned
    only once Azure's clock has passed it, so that no change the deploy update makes can fall
    before it and every write acknowledged before the drain is behind it."""
    api = api or arm_api()
    point = api.now().replace(microsecond=0) + timedelta(seconds=1)
    while api.now() <= point:
        clock.sleep(0.5)
    return point.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the real Azure API (Resource Manager over HTTPS, with the user's credentials) ---------

ARM = "https://management.azure.com"
ARM_SCOPE = f"{ARM}/.default"
CDN_API_VERSION = "2024-02-01"
METRICS_API_VERSION = "2023-10-01"


def _credential() -> Any:
    """The user's Azure credentials: the azure-native provider's ARM_* service principal if
    set, else whatever `DefaultAzureCredential` finds (AZURE_* variables, `az login`, a
    managed identity)."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if all(os.environ.get(k) for k in ("ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_TENANT_ID")):
        return ClientSecretCredential(
            os.environ["ARM_TENANT_ID"],
            os.environ["ARM_CLIENT_ID"],
            os.environ["ARM_CLIENT_SECRET"],
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

    def deployment_status(self, resource_id: str) -> str:
        body = self._get(resource_id, {"api-version": CDN_API_VERSION})
        return str(body.get("properties", {}).get("deploymentStatus") or "NotStarted")

    def origin_requests(
        self, profile_id: str, origin_host: str, start: datetime, end: datetime
    ) -> list[MetricPoint]:
        body = self._get(
            f"{profile_id}/providers/Microsoft.Insights/metrics",
            {
                "api-version": METRICS_API_VERSION,
                "metricnames": "OriginRequestCount",
                "aggregation": "Total",
                "interval": "PT1M",
                "timespan": f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
                "$filter": f"Origin eq '{origin_host}'",
            },
        )
        points = []
        for metric in body.get("value", []):
            for series in metric.get("timeseries", []):
                for data in series.get("data", []):
                    moment = datetime.fromisoformat(data["timeStamp"].replace("Z", "+00:00"))
                    points.append(MetricPoint(moment, data.get("total")))
        return points

    def now(self) -> datetime:
        self._get("/subscriptions", {"api-version": "2022-12-01"})
        assert self._last_date is not None
        return self._last_date


def log_of(_env: Environment, stack: str, config: Mapping[str, str], component: str) -> LogLocation:
    """App Service keeps a web app's output (its log stream); Front Door its access log in the
    diagnostic settings' Log Analytics workspace, if the profile has one."""
    group = config.get("resourceGroupName", "<resource group>")
    if component == "frontdoor":
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
    wait_drained=drain_gate,
    take_restore_point=lambda: take_restore_point(),
    log_of=log_of,
)
