"""The Azure switch and drain gates against fakes of Azure: deployment status sequences, metric
series, and a virtual clock (nothing sleeps for real)."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.helpers.azure_mocks import app_spec
from tests.helpers.commands import run
from tests.helpers.fake_stack import FakeStack
from tests.helpers.stand_in import site
from zdd import driver as driver_module
from zdd.console import Say
from zdd.driver import Driver
from zdd.environment import Environment
from zdd.errors import GateFailed, RefusedTransition
from zdd.gatekeeper import pass_gate
from zdd.phases import Instance, Phase, PhaseSettings
from zdd.results import DeployResult
from zdd.targets import TargetOps, azure
from zdd.targets.azure import (
    Clock,
    DatabaseBackups,
    FrontDoorRefs,
    MetricPoint,
    RouteState,
    read_drain,
    restorable_problem,
    take_restore_point,
    wait_counted,
    wait_origin_idle,
    wait_restorable,
    wait_switched,
)

PROFILE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/fd"
ROUTE = f"{PROFILE}/afdEndpoints/p/routes/site"
PUBLIC_ENDPOINT = "zdd-x-public-h7c2d5e.z01.azurefd.net"
PRIMARY_HOST = "zdd-x-primary.azurewebsites.net"
CLONE_HOST = "zdd-x-clone.azurewebsites.net"
REFS = FrontDoorRefs(PROFILE, PUBLIC_ENDPOINT, {"primary": PRIMARY_HOST, "clone": CLONE_HOST})
DATABASE_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/x/databases/g1"
T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class FakeAzure:
    """Azure as the gates see it, in virtual time (it advances only when a gate sleeps).

    `routes` are the public route's answers in turn (the last one repeats), all changed at
    `modified`. `requests` maps a minute's start to what Front Door forwarded to the primary
    through the public endpoint; `heartbeats` go to `traffic_on`, the origin with the traffic.
    Like Azure Monitor, a series has points only for minutes with data. `monitor_blind` plays
    a query whose filter matches nothing; `origin_names` how Azure Monitor names each host."""

    routes: list[RouteState] = field(
        default_factory=lambda: [RouteState("Succeeded", "Succeeded", T0)]
    )
    requests: dict[datetime, float] = field(default_factory=dict)
    traffic_on: str = CLONE_HOST
    heartbeats: dict[str, dict[datetime, float]] = field(default_factory=dict)
    monitor_blind: bool = False
    origin_names: dict[str, str] = field(default_factory=dict)
    backups: DatabaseBackups = field(
        default_factory=lambda: DatabaseBackups(T0 - timedelta(days=3), T0 - timedelta(days=30))
    )
    elapsed: float = 0.0
    route_reads: list[float] = field(default_factory=list)
    metric_reads: list[tuple[float, str]] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        return Clock(sleep=self._sleep, monotonic=lambda: self.elapsed)

    def _sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def route_state(self, route_id: str) -> RouteState:
        assert route_id == ROUTE
        self.route_reads.append(self.elapsed)
        return self.routes[min(len(self.route_reads), len(self.routes)) - 1]

    def heartbeat(self) -> None:
        per_minute = self.heartbeats.setdefault(self.traffic_on, {})
        per_minute[minute(self.now())] = per_minute.get(minute(self.now()), 0) + 1

    def origin_requests(
        self, profile_id: str, endpoint_host: str, start: datetime, end: datetime
    ) -> dict[str, list[MetricPoint]]:
        assert (profile_id, endpoint_host) == (PROFILE, PUBLIC_ENDPOINT)
        self.metric_reads.append((self.elapsed, endpoint_host))
        if self.monitor_blind:
            return {}
        counted = {host: dict(per_minute) for host, per_minute in self.heartbeats.items()}
        for moment, total in self.requests.items():
            primary = counted.setdefault(PRIMARY_HOST, {})
            primary[moment] = primary.get(moment, 0) + total
        return {
            self.origin_names.get(host, host): [
                MetricPoint(m, total) for m, total in sorted(per_minute.items()) if start <= m < end
            ]
            for host, per_minute in counted.items()
            if any(start <= m < end for m in per_minute)
        }

    def database_backups(self, database_id: str) -> DatabaseBackups:
        assert database_id == DATABASE_ID
        return self.backups

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)


def switched(fake: FakeAzure, **kwargs: Any) -> datetime:
    options: dict[str, Any] = {"floor": 1200.0, "timeout": 2700.0, "settle": 240.0}
    options.update(kwargs)
    said: list[str] = []
    return wait_switched(fake, ROUTE, "clone", said.append, clock=fake.clock, **options)


# -- the switch: deployed everywhere, or accepted and old enough ---------------------------


def test_drain_is_not_judged_while_any_edge_is_still_deploying():
    deploying = [RouteState("Succeeded", status, T0) for status in ("NotStarted", "InProgress")]
    fake = FakeAzure(routes=[*deploying, RouteState("Succeeded", "Succeeded", T0)])
    confirmed = switched(fake)
    assert len(fake.route_reads) == 3
    deployed_at = fake.route_reads[-1]
    assert confirmed == T0 + timedelta(seconds=deployed_at)
    assert fake.metric_reads == []  # no drain evidence was read before the switch was out
    assert fake.elapsed - deployed_at == 240.0  # then the settle time


def test_a_deployment_status_stuck_at_not_started_is_advisory_after_the_floor():
    # Microsoft's own Routes_Get example: provisioning Succeeded, deployment NotStarted.
    fake = FakeAzure(routes=[RouteState("Succeeded", "NotStarted", T0)])
    confirmed = switched(fake, floor=1200.0, timeout=2700.0)
    # Not a timeout: the drain, counted from when the floor passed, decides.
    assert 1200 <= (confirmed - T0).total_seconds() < 1200 + azure.STATUS_POLL_SECONDS


def test_the_floor_counts_from_the_routes_change_not_from_a_restarted_driver():
    # A driver resumed 30 minutes after the switch does not wait another floor.
    fake = FakeAzure(routes=[RouteState("Succeeded", "NotStarted", T0 - timedelta(minutes=30))])
    switched(fake)
    assert len(fake.route_reads) == 1


def test_a_switch_azure_never_accepts_times_out_and_changes_nothing():
    fake = FakeAzure(routes=[RouteState("Updating", "InProgress", T0)])
    with pytest.raises(GateFailed) as failure:
        switched(fake, timeout=1800.0)
    message = str(failure.value)
    assert "has not accepted the switch to the clone" in message
    assert "provisioningState Updating" in message
    assert "traffic stays where Front Door has it" in message and "zdd abort" in message
    assert fake.elapsed >= 1800.0 and fake.metric_reads == []


def test_a_failed_deployment_stops_the_gate():
    failed = [RouteState("Succeeded", "InProgress", T0), RouteState("Succeeded", "Failed", T0)]
    with pytest.raises(GateFailed, match="as Failed"):
        switched(FakeAzure(routes=failed))


# -- the drain: judged only from minutes Azure Monitor has data for -------------------------


def drained_after(
    fake: FakeAzure,
    since: datetime,
    quiet: float = 300.0,
    *,
    timeout: float = 7200,
    say: Say = print,
    heartbeat: Callable[[], None] | None = None,
) -> float:
    """How long the primary's drain waited, with the driver's heartbeat reaching the clone."""
    started = fake.elapsed
    wait_origin_idle(
        fake, REFS, "primary", since, say, heartbeat or fake.heartbeat, quiet=quiet,
        timeout=timeout, clock=fake.clock,
    )  # fmt: skip
    return fake.elapsed - started


def test_an_idle_origin_drains_after_the_quiet_period_and_the_metrics_delay():
    fake = FakeAzure()
    waited = drained_after(fake, T0)
    # 5 quiet minutes, each only trusted once Azure Monitor has surely processed it (3 more).
    assert waited >= 300 + azure.METRICS_DELAY_SECONDS
    # Every judged minute had data: the driver's heartbeat reached the clone through the edge.
    assert len(fake.heartbeats[CLONE_HOST]) >= 5


def test_minutes_without_any_data_never_count_as_quiet():
    # A filter that matches nothing, or a metrics pipeline running late: no series at all.
    fake = FakeAzure(monitor_blind=True)
    with pytest.raises(GateFailed, match=r"minute\(s\) without any data.*not touched"):
        drained_after(fake, T0, timeout=1800)


def test_a_late_minute_restarts_the_quiet_period_after_it():
    fake = FakeAzure()
    # The heartbeat reaches the clone every minute but one, for which Azure has no data yet.
    gap = minute(T0) + timedelta(minutes=3)

    def heartbeat() -> None:
        if minute(fake.now()) != gap:
            fake.heartbeat()

    drained_after(fake, T0, heartbeat=heartbeat)
    # Quiet for 5 whole minutes after the gap, as processed by Azure Monitor.
    assert fake.now() >= gap + timedelta(minutes=1, seconds=300 + azure.METRICS_DELAY_SECONDS)


def test_origins_the_stack_does_not_know_stop_the_drain_at_once():
    # Azure Monitor names the origins otherwise than the stack: the filter could never match.
    fake = FakeAzure(origin_names={CLONE_HOST: "clone-origin"})
    with pytest.raises(GateFailed, match=r"names origins \['clone-origin'\]"):
        drained_after(fake, T0)


def test_requests_from_a_late_edge_start_the_quiet_period_again():
    busy = T0 + timedelta(minutes=4)
    fake = FakeAzure(requests={busy: 3.0, T0 + timedelta(minutes=1): 1.0})
    waited = drained_after(fake, T0)
    assert fake.now() >= busy + timedelta(minutes=1, seconds=300 + azure.METRICS_DELAY_SECONDS)
    assert waited > 300 + azure.METRICS_DELAY_SECONDS


def test_minutes_before_the_switch_do_not_count():
    # The primary served visitors until the switch at 10:00:30, in the minute from 10:00.
    fake = FakeAzure(requests={T0: 500.0})
    since = T0 + timedelta(seconds=30)
    said: list[str] = []
    drained_after(fake, since, say=said.append)
    # Judged from the first whole minute after the switch: none of those requests counted.
    assert not [line for line in said if "request(s) reached the primary" in line], said
    reading = read_drain(fake, REFS, "primary", since)
    assert (reading.count, reading.last_busy) == (0, None)
    # Drained at the first poll once 10:01 plus the quiet period has been processed.
    first_minute = (minute(since) + timedelta(minutes=1) - T0).total_seconds()
    due = first_minute + 300 + azure.METRICS_DELAY_SECONDS
    assert fake.elapsed == math.ceil(due / azure.METRICS_POLL_SECONDS) * azure.METRICS_POLL_SECONDS


def test_a_primary_that_keeps_getting_requests_is_never_touched():
    fake = FakeAzure(requests={T0 + timedelta(minutes=m): 1.0 for m in range(0, 400)})
    with pytest.raises(GateFailed, match=r"not shown idle.*request\(s\) since the switch"):
        drained_after(fake, T0, timeout=1200)


def test_before_the_cutover_the_same_query_must_see_the_primarys_requests():
    fake = FakeAzure(traffic_on=PRIMARY_HOST)
    wait_counted(fake, REFS, "primary", print, fake.heartbeat, timeout=600, clock=fake.clock)
    assert fake.heartbeats[PRIMARY_HOST]  # the driver's own requests, seen by the query
    blind = FakeAzure(traffic_on=PRIMARY_HOST, origin_names={PRIMARY_HOST: "primary"})
    with pytest.raises(GateFailed, match=r"show none of the requests.*traffic was not moved"):
        wait_counted(blind, REFS, "primary", print, blind.heartbeat, timeout=600, clock=blind.clock)


def test_the_query_counts_the_public_endpoint_split_by_origin():
    """The real API's request and the way it reads Azure Monitor's answer."""
    seen: list[httpx.Request] = []
    answer = {
        "value": [
            {
                "timeseries": [
                    {
                        "metadatavalues": [{"name": {"value": "Origin"}, "value": host}],
                        "data": [{"timeStamp": "2025-03-01T10:00:00Z", "total": total}],
                    }
                    for host, total in ((PRIMARY_HOST, 2.0), (CLONE_HOST, 7.0))
                ]
            }
        ]
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer, headers={"Date": "Sat, 01 Mar 2025 10:05:00 GMT"})

    api = azure.ArmApi.__new__(azure.ArmApi)
    api._credential = SimpleNamespace(get_token=lambda _scope: SimpleNamespace(token="t"))
    api._client = httpx.Client(base_url=azure.ARM, transport=httpx.MockTransport(handler))
    series = api.origin_requests(PROFILE, PUBLIC_ENDPOINT, T0, T0 + timedelta(minutes=5))
    assert series == {
        PRIMARY_HOST: [MetricPoint(T0, 2.0)],
        CLONE_HOST: [MetricPoint(T0, 7.0)],
    }
    (request,) = seen
    # The preview endpoint reaches the primary too: only the public one's requests count.
    assert request.url.params["$filter"] == f"Endpoint eq '{PUBLIC_ENDPOINT}' and Origin eq '*'"
    assert request.url.params["metricnames"] == "OriginRequestCount"


# -- the restore point ----------------------------------------------------------------------


def test_restore_point_is_azures_time_rounded_up_and_already_past():
    fake = FakeAzure(elapsed=12.4)
    point = take_restore_point(fake.clock, fake)
    assert point == "2025-03-01T10:00:13Z"  # 10:00:12.4 rounded up, not truncated
    moment = datetime.fromisoformat(point.replace("Z", "+00:00"))
    assert fake.now() > moment  # nothing after this call can fall before the point


OUTPUTS = {"primary_database_id": DATABASE_ID}


def test_a_deployment_waits_for_the_primary_databases_first_backup():
    created = T0 - timedelta(minutes=10)
    fresh = FakeAzure(backups=DatabaseBackups(None, created))
    problem = restorable_problem(OUTPUTS, fresh)
    assert problem is not None and "no restorable point yet" in problem
    assert "after 10:20 UTC (in about 20 minute(s))" in problem
    assert restorable_problem(OUTPUTS, FakeAzure()) is None


def test_a_restore_waits_until_a_log_backup_covers_its_point():
    fake = FakeAzure()
    point = T0 - timedelta(minutes=2)  # a migration failed two minutes after the point
    said: list[str] = []
    wait_restorable(OUTPUTS, f"{point:%Y-%m-%dT%H:%M:%SZ}", said.append, fake, fake.clock)
    covered = point + timedelta(seconds=azure.LOG_BACKUP_COVERED_SECONDS)
    assert fake.now() >= covered and fake.elapsed < (covered - T0).total_seconds() + 31
    assert said and all("log backup to cover restore point" in line for line in said)
    # An old point is restorable at once.
    old = FakeAzure()
    wait_restorable(OUTPUTS, "2025-03-01T08:00:00Z", print, old, old.clock)
    assert old.elapsed == 0


def test_a_point_before_the_earliest_restorable_one_is_refused():
    fake = FakeAzure(backups=DatabaseBackups(T0 - timedelta(minutes=1), T0 - timedelta(hours=1)))
    with pytest.raises(RefusedTransition, match="earliest restorable point"):
        wait_restorable(OUTPUTS, "2025-03-01T09:30:00Z", print, fake, fake.clock)


# -- the driver's gates: a clone is deleted only once its origin is idle -------------------


def test_the_gates_check_the_stacks_health_path(stand_in):
    # Only the configured path answers; /healthz is the site's page for something else.
    app = stand_in(
        lambda path: site("clone", mode="ReadOnly") if path == "/status" else (404, {}, b"")
    )
    config = {"app": app_spec(health={"path": "/status"})}
    settings = PhaseSettings(phase=Phase.CLONE, current_version="v1", target_version="v2")
    outputs = {"clone_url": app.url}
    counted: list[str] = []
    ops = dataclasses.replace(
        azure.AZURE, prove_counted=lambda _outputs, origin, _say: counted.append(origin)
    )
    pass_gate(Phase.CLONE, Phase.CUTOVER, settings, outputs, ops, config, print, stack="s")
    assert {urlparse(seen["path"]).path for seen in app.seen} == {"/status"}
    # Before any traffic moves, the counters that will judge the primary's drain see it.
    assert counted == [Instance.PRIMARY]


def test_clone_is_never_deleted_before_its_origin_is_confirmed_idle(
    stand_in, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # The driver itself, from the update that moved the traffic back to the primary, on a
    # fake stack: Front Door's metrics show the clone busy once, then idle.
    public = stand_in(lambda path: site("primary", version="v2"))
    events: list[tuple[str, ...]] = []
    busy = [True, False]

    def wait_for_switch(outputs: Any, origin: str, say: Any) -> datetime:
        events.append(("switched", origin))
        return T0

    def drain(outputs: Any, origin: str, say: Any, since: datetime) -> None:
        events.append(("drained", origin))
        if busy.pop(0):
            raise GateFailed(f"drain check: the {origin} still got requests")

    ops = TargetOps(
        "fake-azure",
        lambda version, config: None,
        lambda env, stack: {},
        lambda outputs, origin: 0,
        wait_switched=wait_for_switch,
        wait_origin_idle=drain,
    )
    monkeypatch.setattr(driver_module, "ops_for", lambda _name: ops)
    monkeypatch.setenv("ZDD_POLICY_PACK", "none")
    config = {"target": "azure", "deploymentId": "d1", "phase": "return",
              "currentVersion": "v1", "targetVersion": "v2",
              "restorePoint": "2025-03-01T10:00:13Z"}  # fmt: skip
    urls = {"public_url": public.url, "primary_url": public.url}
    stack = FakeStack(config, events, outputs=urls)
    driver = Driver(Environment(tmp_path), "s", stack=stack)  # type: ignore[arg-type]
    result = DeployResult("running", "s", "resume", "v1", "v2", "read-only")

    with pytest.raises(GateFailed, match="clone still got requests"):
        driver.run(result)
    # The idle update (which deletes the clone) did not run: the stack still has its clone.
    assert events == [("switched", Instance.PRIMARY), ("drained", Instance.CLONE)]
    assert stack.outputs()["phase"] == "return"

    driver.run(result)  # `zdd resume`, once the metrics show the clone idle
    assert events[2:] == [
        ("switched", Instance.PRIMARY),
        ("drained", Instance.CLONE),
        ("up", "idle"),
    ]


# -- no credentials: one line, nothing changed ---------------------------------------------


def test_no_azure_credentials_fail_in_one_line(tmp_path):
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = "from zdd.targets.azure import AZURE\nAZURE.check_ready()\n"
    done = run([sys.executable, "-c", probe], environment, timeout=60)
    assert done.code != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zdd.errors.BadInput: no Azure credentials: run `az login`")
    assert "nothing was changed" in last
    assert "Attempted credentials" not in done.stderr  # the SDK's report stays out
