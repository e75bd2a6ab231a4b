"""Binds the table of gates (`zdd.gates.GATES`) to a stack: its settings, its last outputs,
its target's operations and timeouts, so that the checks never need to know the cloud."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from zdd import appspec, gates
from zdd.console import Say
from zdd.phases import DatabaseMode, Instance, Mode, Phase, PhaseSettings, Strategy
from zdd.targets import TargetOps


def pass_gate(
    src: Phase,
    dst: Phase,
    settings: PhaseSettings,
    outputs: Mapping[str, Any],
    ops: TargetOps,
    config: Mapping[str, str],
    say: Say,
    *,
    stack: str,
) -> None:
    """The check of `gates.GATES` that must pass before the stack moves from `src` to `dst`
    (raises `GateFailed`, whose message ends with how to see the log of what failed); a move
    the table does not name has none."""
    gate = gates.GATES.get((src, dst))
    if gate is None:
        return

    def wait_switched(origin: Instance) -> datetime | None:
        """A cloud front door: the switch to `origin` deployed everywhere, and when."""
        return ops.wait_switched(outputs, origin, say) if ops.wait_switched else None

    def wait_drained(origin: Instance, switched: datetime | None, hint: str) -> None:
        """Rules 2 and 5 of docs/design.md: no public request reaches `origin` any more,
        judged by the target."""
        if ops.wait_origin_idle is not None and switched is not None:
            ops.wait_origin_idle(outputs, origin, say, switched)
            return
        waited = gates.wait_none_in_flight(
            lambda: ops.in_flight(outputs, origin),
            origin,
            timeout=ops.timeouts.drained,
            hint=hint,
        )
        say(f"gate: {origin} drained after {waited:.2f}s")

    def drain_visible(origin: Instance) -> None:
        """A cloud front door's counters see requests to `origin` (local counters are the
        front door's own, per server)."""
        if ops.prove_counted is not None:
            ops.prove_counted(outputs, origin, say)

    # How long an app may take to answer as expected: the site's app spec (on every target:
    # Azure's own probes use the same path), the target's defaults (a cloud front door needs
    # minutes), or the stack's `zdd:gateTimeoutSeconds` over both.
    override = config.get("gateTimeoutSeconds")
    health = appspec.health_check_of(config) or appspec.HealthCheck(
        timeout_seconds=ops.timeouts.healthy
    )
    # On the compatible strategy the clone is a second instance on the primary's database.
    read_write = settings.mode is Mode.READ_WRITE or settings.strategy is Strategy.COMPATIBLE
    gate(
        gates.GateContext(
            outputs=outputs,
            current_version=settings.current_version,
            target_version=settings.target_version or settings.current_version,
            clone_mode=DatabaseMode.READ_WRITE if read_write else DatabaseMode.READ_ONLY,
            health_path=health.path,
            healthy_within=float(override) if override else health.timeout_seconds,
            moved_within=float(override) if override else ops.timeouts.public_origin,
            served_by_header=ops.served_by_header,
            say=say,
            wait_switched=wait_switched,
            wait_drained=wait_drained,
            drain_visible=drain_visible,
            see_log=lambda component: f"its log: `zdd logs --stack {stack} {component}`",
        )
    )
