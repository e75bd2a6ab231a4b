"""The Azure switch and drain gates against fakes of Azure: deployment status sequences, metric
series, and a virtual clock (nothing sleeps for real)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.test_azure_gates import stand_in  # noqa: F401 - the loopback server fixture
from tests.test_azure_phases import app_spec
from zdd import azure
from zdd.azure import Clock, MetricPoint, take_restore_point, wait_origin_idle, wait_switched
from zdd.errors import GateFailed
from zdd.gatekeeper import pass_gate
from zdd.phases import Instance, Phase, StackSettings
from zdd.targets import TargetOps

PROFILE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/fd"
ROUTE = f"{PROFILE}/afdEndpoints/p/routes/site"
PRIMARY_HOST = "zdd-x-primary.azurewebsites.net"
T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)


@dataclass
class FakeAzure:
    """Azure as the gates see it. `statuses` are the route's answers in turn (the last one
    repeats); `requests` maps a minute's start to what Front Door forwarded to the primary.
    Virtual time advances only when the gate sleeps."""

    statuses: list[str] = field(default_factory=lambda: ["Succeeded"])
    requests: dict[datetime, float] = field(default_factory=dict)
    elapsed: float = 0.0
    status_reads: list[float] = field(default_factory=list)
    metric_reads: list[float] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        return Clock(sleep=self._sleep, monotonic=lambda: self.elapsed)

    def _sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def deployment_status(self, resource_id: str) -> str:
        assert resource_id == ROUTE
        self.status_reads.append(self.elapsed)
        return self.statuses[min(len(self.status_reads) - 1, len(self.statuses) - 1)]

    def origin_requests(
        self, profile_id: str, origin_host: str, start: datetime, end: datetime
    ) -> list[MetricPoint]:
        assert (profile_id, origin_host) == (PROFILE, PRIMARY_HOST)
        self.metric_reads.append(self.elapsed)
        minutes = int((end - start).total_seconds() // 60)
        points = [start + timedelta(minutes=i) for i in range(minutes)]
        # Azure leaves out minutes without data; the fake does the same for odd ones.
        return [
            MetricPoint(moment, self.requests.get(moment))
            for moment in points
            if moment in self.requests or moment.minute % 2 == 0
        ]

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)


def switched(fake: FakeAzure, **kwargs: Any) -> datetime:
    options: dict[str, Any] = {"timeout": 3600.0, "settle": 240.0}
    options.update(kwargs)
    said: list[str] = []
    return wait_switched(fake, ROUTE, "clone", said.append, clock=fake.clock, **options)


# -- the switch is judged only once every edge has it -------------------------------------


def test_drain_is_not_judged_while_any_edge_is_still_deploying():
    fake = FakeAzure(statuses=["NotStarted", "InProgress", "InProgress", "InProgress", "Succeeded"])
    confirmed = switched(fake)
    assert len(fake.status_reads) == 5
    deployed_at = fake.status_reads[-1]
    assert confirmed == T0 + timedelta(seconds=deployed_at)
    assert fake.metric_reads == []  # no drain evidence was read before Succeeded
    wait_origin_idle(
        fake, PROFILE, PRIMARY_HOST, "primary", confirmed, print, quiet=300, timeout=3600,
        clock=fake.clock,
    )  # fmt: skip
    assert min(fake.metric_reads) >= deployed_at


def test_the_settle_time_is_honoured_after_the_switch_is_deployed():
    fake = FakeAzure(statuses=["InProgress", "Succeeded"])
    switched(fake, settle=240.0)
    assert fake.elapsed - fake.status_reads[-1] == 240.0


def test_a_switch_that_never_deploys_times_out_and_changes_nothing():
    fake = FakeAzure(statuses=["InProgress"])
    with pytest.raises(GateFailed) as failure:
        switched(fake, timeout=1800.0)
    message = str(failure.value)
    assert "has not deployed the switch to the clone on every edge" in message
    assert "deploymentStatus InProgress" in message
    assert "traffic stays where Front Door has it" in message and "zdd abort" in message
    assert fake.elapsed >= 1800.0 and fake.metric_reads == []


def test_a_failed_deployment_stops_the_gate():
    with pytest.raises(GateFailed, match="as Failed"):
        switched(FakeAzure(statuses=["InProgress", "Failed"]))


# -- the drain is judged from what every edge forwarded to the origin ---------------------


def drained_after(fake: FakeAzure, since: datetime, quiet: float = 300.0) -> float:
    started = fake.elapsed
    wait_origin_idle(
        fake, PROFILE, PRIMARY_HOST, "primary", since, print, quiet=quiet, timeout=7200,
        clock=fake.clock,
    )  # fmt: skip
    return fake.elapsed - started


def test_an_idle_origin_drains_after_the_quiet_period_and_the_metrics_delay():
    fake = FakeAzure()
    waited = drained_after(fake, T0)
    # 5 quiet minutes, each only trusted once Azure Monitor has surely processed it (3 more).
    assert waited >= 300 + azure.METRICS_DELAY_SECONDS


def test_requests_from_a_late_edge_start_the_quiet_period_again():
    busy = T0 + timedelta(minutes=4)
    fake = FakeAzure(requests={busy: 3.0, T0 + timedelta(minutes=1): 1.0})
    waited = drained_after(fake, T0)
    # Quiet for 5 minutes after the last busy minute, as processed by Azure Monitor.
    assert fake.now() >= busy + timedelta(minutes=1, seconds=300 + azure.METRICS_DELAY_SECONDS)
    assert waited > 300 + azure.METRICS_DELAY_SECONDS


def test_minutes_before_the_switch_do_not_count():
    # The primary served visitors until the switch at 10:00:30.
    fake = FakeAzure(requests={T0: 500.0})
    since = T0 + timedelta(seconds=30)
    assert drained_after(fake, since) < 300 + azure.METRICS_DELAY_SECONDS + 120


def test_a_primary_that_keeps_getting_requests_is_never_touched():
    fake = FakeAzure(requests={T0 + timedelta(minutes=m): 1.0 for m in range(0, 400)})
    with pytest.raises(GateFailed, match=r"still got requests from Front Door.*not touched"):
        wait_origin_idle(
            fake, PROFILE, PRIMARY_HOST, "primary", T0, print, quiet=300, timeout=1200,
            clock=fake.clock,
        )  # fmt: skip


# -- the restore point --------------------------------------------------------------------


def test_restore_point_is_azures_time_rounded_up_and_already_past():
    fake = FakeAzure(elapsed=12.4)
    point = take_restore_point(fake.clock, fake)
    assert point == "2025-03-01T10:00:13Z"  # 10:00:12.4 rounded up, not truncated
    moment = datetime.fromisoformat(point.replace("Z", "+00:00"))
    assert fake.now() > moment  # nothing after this call can fall before the point


# -- the driver's gates: a clone is deleted only once its origin is idle -------------------


def test_the_gates_check_the_stacks_health_path(stand_in):  # noqa: F811
    from tests.test_azure_gates import site

    # Only the configured path answers; /healthz is the site's page for something else.
    app = stand_in(
        lambda path: site("clone", mode="ReadOnly") if path == "/status" else (404, {}, b"")
    )
    config = {"app": app_spec(health={"path": "/status"})}
    settings = StackSettings(phase=Phase.CLONE, current_version="v1", target_version="v2")
    outputs = {"clone_url": app.url}
    pass_gate(Phase.CLONE, Phase.CUTOVER, settings, outputs, azure.AZURE, config, print, stack="s")
    assert {urlparse(seen["path"]).path for seen in app.seen} == {"/status"}


def test_clone_is_never_deleted_before_its_origin_is_confirmed_idle(stand_in):  # noqa: F811
    from tests.test_azure_gates import site

    public = stand_in(lambda path: site("primary", version="v2"))
    calls: list[tuple[str, str]] = []

    def wait_for_switch(outputs: Any, origin: str, say: Any) -> datetime:
        calls.append(("switched", origin))
        return T0

    def refuse_drain(outputs: Any, origin: str, say: Any, since: datetime) -> None:
        calls.append(("drained", origin))
        raise GateFailed(f"drain check: the {origin} still got requests")

    ops = TargetOps(
        "fake-azure",
        lambda version, config: None,
        lambda env, stack: {},
        lambda outputs, origin: 0,
        wait_switched=wait_for_switch,
        wait_drained=refuse_drain,
    )
    settings = StackSettings(phase=Phase.RETURN, current_version="v1", target_version="v2",
                             restore_point="2025-03-01T10:00:13Z")  # fmt: skip
    outputs = {"public_url": public.url, "primary_url": public.url}
    with pytest.raises(GateFailed, match="clone still got requests"):
        pass_gate(Phase.RETURN, Phase.IDLE, settings, outputs, ops, {}, print, stack="s")
    # The idle update (which deletes the clone) runs only after this gate passes.
    assert calls == [("switched", Instance.PRIMARY), ("drained", Instance.CLONE)]


# -- no credentials: one line, nothing changed ---------------------------------------------


def test_no_azure_credentials_fail_in_one_line(tmp_path):
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = "from zdd.azure import AZURE\nAZURE.check_ready()\n"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=environment,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zdd.errors.BadInput: no Azure credentials: run `az login`")
    assert "nothing was changed" in last
    assert "Attempted credentials" not in done.stderr  # the SDK's report stays out
