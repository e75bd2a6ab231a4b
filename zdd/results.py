"""What the driver reports: a stack's status and an action's result, as a caller reads them
(`as_json()` is what `zdd ... --json` prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zdd.phases import Instance, Phase


@dataclass
class PhaseTiming:
    name: str
    seconds: float
    started_at: float = 0.0  # epoch seconds


@dataclass
class Status:
    stack: str
    target: str
    phase: str
    applied_phase: str | None
    state: str
    current_version: str
    target_version: str | None
    traffic: str
    mode: str
    deployment_in_progress: bool
    read_only_window_seconds: float | None
    public_url: str | None
    preview_url: str | None
    restore_point: str | None
    database_generation: int
    # Each component of the last update: {"url", "listening", "answering"}.
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The path a deployment in progress takes (`clone` or `compatible`).
    strategy: str = "clone"

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class DeployResult:
    outcome: str
    stack: str
    action: str
    from_version: str
    to_version: str
    mode: str
    phases: list[PhaseTiming] = field(default_factory=list)
    read_only_window_seconds: float | None = None
    probe: dict[str, Any] | None = None
    window: tuple[float, float] | None = None  # epoch seconds: traffic on the clone
    error: str | None = None
    # Every resource an update changed: {"phase", "resource", "op"}, and "seconds" (its step)
    # for a resource that does work itself.
    changed: list[dict[str, Any]] = field(default_factory=list)
    # Read-write mode: what the clone was given and where its database is archived.
    lost_writes: dict[str, Any] | None = None
    # Read-only mode: the clone's database changed although it was read-only (rule 9 of
    # docs/design.md).
    read_only_violation: str | None = None
    # The path the deployment took (`clone` or `compatible`), why, and the rehearsal behind it.
    strategy: str = "clone"
    strategy_reason: str | None = None
    rehearsal: dict[str, Any] | None = None

    def primary_work(self) -> dict[str, Any] | None:
        """The read-only window against the primary's own work in it: what the update that
        upgrades and migrates the primary spent in the primary's resources (restore point,
        migration, start and verification); the rest of the window is the engine, the driver
        and the front door's switches."""
        window = self.read_only_window_seconds
        steps = {
            change["resource"]: float(change["seconds"])
            for change in self.changed
            if change["phase"] in (Phase.DEPLOY, Phase.RETURN)
            and change["resource"].startswith(f"{Instance.PRIMARY}-")
            and "seconds" in change
        }
        if not window or not steps:
            return None
        seconds = sum(steps.values())
        return {
            "seconds": round(seconds, 2),
            "resources": {name: round(value, 2) for name, value in steps.items()},
            "window_over_work": round(window / seconds, 2),
        }

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "outcome": self.outcome,
            "stack": self.stack,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "mode": self.mode,
            "phases": [
                {"name": p.name, "seconds": round(p.seconds, 2), "started_at": p.started_at}
                for p in self.phases
            ],
            "read_only_window_seconds": (
                round(self.read_only_window_seconds, 2)
                if self.read_only_window_seconds is not None
                else None
            ),
            "traffic_on_clone": list(self.window) if self.window else None,
            "changed": self.changed,
            "strategy": self.strategy,
            "strategy_reason": self.strategy_reason,
        }
        if (work := self.primary_work()) is not None:
            result["primary_work"] = work
        if self.rehearsal is not None:
            result["rehearsal"] = self.rehearsal
        if self.lost_writes is not None:
            result["lost_writes"] = self.lost_writes
        if self.read_only_violation is not None:
            result["read_only_violation"] = self.read_only_violation
        if self.error:
            result["error"] = self.error
        if self.probe is not None:
            result["probe"] = self.probe
        return result
