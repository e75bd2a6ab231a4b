"""The history of a stack's deployments and recoveries, told from the stack alone.

Each update the driver runs carries a message: `zdd ` and a JSON record of its action(s),
deployment, versions and phase, and of the gate that had failed before it, if one had. A gate
that fails runs no update, so its failure waits in the stack config (`zdd:failedGate`) until
the next update's message records it. `zdd history` reads every page of the stack's update
history and tells each deployment's real outcome: succeeded, aborted (at which gate), failed
(at which phase or gate) or rolled back (to which version), and the version it attempted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from zdd.phases import Phase, Strategy
from zdd.stack import Stack

# Marks the update messages the driver wrote, among any others of the stack's history.
HISTORY_PREFIX = "zdd "
# The config key that holds a gate failure until an update's message records it.
FAILED_GATE_KEY = "failedGate"
# Where an update's message records it.
FAILED_GATE_FIELD = "failed_gate"
# The config key that keeps the figures of a command's load probe (`--probe`) until the next
# update's message records them: a probe ends after the last update of its command.
PROBE_KEY = "probeReport"
PROBE_FIELD = "probe"
# What history keeps of a probe's report (zdd.probe.ProbeReport).
PROBE_FIGURES = (
    "requests", "failed", "writes_acknowledged", "writes_held", "longest_hold_seconds",
    "writes_refused", "writes_lost", "writes_hidden",
)  # fmt: skip
_KEPT_IN_CONFIG = ((FAILED_GATE_KEY, FAILED_GATE_FIELD), (PROBE_KEY, PROBE_FIELD))
# Actions that set out for a version; a rollback goes back to the one before.
FORWARD_ACTIONS = frozenset({"init", "deploy", "rollforward", "app-set"})
ROLLBACKS = {"rollback-code-only": "code only", "rollback-with-database": "with the database"}


def history_message(record: dict[str, Any]) -> str:
    return HISTORY_PREFIX + json.dumps(record, sort_keys=True)


def gate_failure(src: Phase, dst: Phase, at: float | None = None) -> dict[str, str]:
    """The config change that keeps a failed gate until the next update records it."""
    record = {"gate": f"{src} -> {dst}", "at": round(time.time() if at is None else at, 3)}
    return {FAILED_GATE_KEY: json.dumps(record, sort_keys=True)}


def probe_figures(deployment: str | None, action: str, report: Mapping[str, Any]) -> dict[str, str]:
    """The config change that keeps a finished probe's figures until the next update records
    them."""
    record = {"deployment": deployment, "action": action}
    record.update({key: report.get(key) for key in PROBE_FIGURES})
    return {PROBE_KEY: json.dumps(record, sort_keys=True)}


def _kept(config: Mapping[str, str], key: str, needs: str) -> dict[str, Any] | None:
    raw = config.get(key)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and needs in record else None


def pending_gate_failure(config: Mapping[str, str]) -> dict[str, Any]:
    """What the next update's message says about a gate that failed since the last update."""
    record = _kept(config, FAILED_GATE_KEY, "gate")
    return {FAILED_GATE_FIELD: record} if record else {}


def pending_probe(config: Mapping[str, str]) -> dict[str, Any]:
    """What the next update's message says about the probe of the last command."""
    record = _kept(config, PROBE_KEY, "requests")
    return {PROBE_FIELD: record} if record else {}


def kept_until_recorded(record: Mapping[str, Any]) -> dict[str, None]:
    """The config change that drops what an update's message (`record`) now holds."""
    return {key: None for key, name in _KEPT_IN_CONFIG if name in record}


def strategy_field(config: Mapping[str, str]) -> dict[str, str]:
    """What an update's record says of the path its deployment takes: every update of a
    deployment but its last (whose config has the key cleared already) records it, so that
    `zdd history` keeps it per deployment. Outside a deployment: nothing."""
    if config.get("phase", str(Phase.IDLE)) == Phase.IDLE:
        return {}
    return {"strategy": config.get("strategy") or str(Strategy.CLONE)}


def read_history(stack: Stack) -> list[dict[str, Any]]:
    """Past deployments and recoveries, newest first, from the update messages kept with the
    stack (every page of them) and, for the newest, its config."""
    entries = []
    for update in stack.history():
        message = update.message or ""
        if update.kind != "update" or not message.startswith(HISTORY_PREFIX):
            continue
        record = json.loads(message.removeprefix(HISTORY_PREFIX))
        seconds = (
            (update.end_time - update.start_time).total_seconds()
            if update.end_time and update.start_time
            else None
        )
        entries.append(
            {
                **record,
                "result": update.result,
                "started": update.start_time.isoformat() if update.start_time else None,
                "seconds": seconds,
            }
        )
    return group_history(entries, stack.config())


def group_history(
    updates: list[dict[str, Any]], config: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Group per-phase updates (newest first, as Pulumi lists them) into deployments, newest
    first. A deployment ends with its first idle update that succeeded; `config` (the stack's
    now) tells what the newest one waits for."""
    entries: list[_Entry] = []
    open_entries: dict[str, _Entry] = {}
    # A probe's figures reach the history with the update after its command: often the next
    # deployment's first; they belong to the deployment they name.
    by_deployment: dict[str, _Entry] = {}
    for update in reversed(updates):
        key = update.get("deployment") or ""
        entry = open_entries.get(key) if key else None
        if entry is None:
            entry = _Entry(update)
            entries.append(entry)
            if key:
                open_entries[key] = by_deployment[key] = entry
        entry.add(update)
        _file_probe(update.get(PROBE_FIELD), by_deployment)
        if entry.ended and key:
            del open_entries[key]
    if entries:
        entries[-1].pending = pending_gate_failure(config or {}).get(FAILED_GATE_FIELD)
        entries[-1].awaiting = (config or {}).get("awaitApproval") == "true"
        _file_probe(pending_probe(config or {}).get(PROBE_FIELD), by_deployment)
    return [entry.as_json() for entry in reversed(entries)]


def _file_probe(record: object, by_deployment: Mapping[str, _Entry]) -> None:
    if isinstance(record, dict) and (entry := by_deployment.get(str(record.get("deployment")))):
        entry.probes.append(record)


def _probe_total(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of every probe that watched a deployment (one per command: a deployment
    that waited for approval has the deploy's and the completion's)."""
    total: dict[str, Any] = {"commands": [str(r.get("action")) for r in records]}
    for key in PROBE_FIGURES:
        values = [float(r.get(key) or 0) for r in records]
        total[key] = max(values) if key == "longest_hold_seconds" else int(sum(values))
    return total


class _Entry:
    """One deployment (or init, app spec change, repair) as its updates tell it."""

    def __init__(self, first: dict[str, Any]) -> None:
        self.deployment: str | None = first.get("deployment")
        self.started: str | None = first.get("started")
        self.from_version: str | None = first.get("from")
        self.actions: list[str] = []
        self.attempted: list[str] = []
        self.phases: list[dict[str, Any]] = []
        self.rollback: tuple[str, str] | None = None  # (kind, version) of the latest rollback
        self.failure: dict[str, str] | None = None  # the latest: {"gate"} or {"phase"}
        self.last: dict[str, Any] = first
        self.last_to: str | None = first.get("to")
        self.read_only_violation: str | None = None
        # The path the deployment took (`clone` or `compatible`), from the updates that ran it.
        self.strategy: str | None = None
        self.pending: dict[str, Any] | None = None  # a gate failure the config still holds
        self.awaiting = False
        self._gates_seen: set[float] = set()
        self.probes: list[dict[str, Any]] = []
        self.read_only_window: float | None = None

    @property
    def ended(self) -> bool:
        # A rehearsal's first update leaves the stack at rest with the rehearsal still declared.
        return (
            self.last.get("result") == "succeeded"
            and self.last.get("phase") == Phase.IDLE
            and not self.last.get("rehearsing")
        )

    def add(self, update: dict[str, Any]) -> None:
        self.last = update
        self.last_to = update.get("to") or self.last_to
        gate = update.get(FAILED_GATE_FIELD)
        # Before this update ran, a gate had failed (an update retried may repeat the record).
        if isinstance(gate, dict) and (at := float(gate.get("at") or 0)) not in self._gates_seen:
            self._gates_seen.add(at)
            self.failure = {"gate": str(gate.get("gate"))}
        # "deploy+rollback-code-only": a deployment that applied its `--on-failure` recovery
        # by itself; the versions are the last action's.
        names = str(update.get("action", "")).split("+")
        self.actions += [name for name in names if name not in self.actions]
        intent, to = names[-1], update.get("to")
        if intent in FORWARD_ACTIONS and to:
            if not self.attempted or self.attempted[-1] != to:
                self.attempted.append(to)
            self.rollback = None
        if intent in ROLLBACKS and to:
            self.rollback = (ROLLBACKS[intent], to)
        self.phases.append(
            {
                "name": update.get("phase"),
                "seconds": update.get("seconds"),
                "action": update.get("action"),
                "result": update.get("result"),
            }
        )
        if update.get("result") == "failed":
            self.failure = {"phase": str(update.get("phase"))}
        if update.get("strategy"):
            self.strategy = str(update["strategy"])
        if update.get("read_only_violation"):
            self.read_only_violation = update["read_only_violation"]
        if update.get("read_only_window_seconds") is not None:
            self.read_only_window = float(update["read_only_window_seconds"])

    def _outcome(self) -> tuple[str, str, dict[str, str] | None]:
        """(outcome, in words, where it failed)."""
        result, phase = self.last.get("result"), self.last.get("phase")
        if result == "failed":
            return "failed", f"failed at phase {phase}", {"phase": str(phase)}
        if result != "succeeded":
            return "in-progress", f"update of phase {phase} {result}", None
        cause = ""
        if self.failure is not None:
            where = self.failure.get("gate") or self.failure.get("phase")
            kind = "gate" if "gate" in self.failure else "phase"
            cause = f" after {kind} {where} failed"
        if self.ended and "abort" in self.actions:
            if self.failure and "gate" in self.failure:
                return "aborted", f"aborted at gate {self.failure['gate']}", self.failure
            return "aborted", f"aborted{cause or ' by the operator'}", self.failure
        if self.ended and self.rollback is not None:
            kind, version = self.rollback
            return "rolled-back", f"rolled back to {version} ({kind}){cause}", self.failure
        if self.ended:
            return "succeeded", "succeeded", None
        if self.pending is not None:
            gate = {"gate": str(self.pending.get("gate"))}
            return "failed", f"failed at gate {gate['gate']}", gate
        if self.awaiting and phase == Phase.DEPLOY:
            return "awaiting-approval", "awaiting approval", None
        return "in-progress", f"in progress (phase {phase} applied)", None

    def as_json(self) -> dict[str, Any]:
        outcome, words, failed_at = self._outcome()
        entry: dict[str, Any] = {
            "deployment": self.deployment,
            "actions": self.actions,
            "from_version": self.from_version,
            # The version it set out for (the latest, after a roll forward), not where it ended.
            "to_version": self.attempted[-1] if self.attempted else self.last_to,
            "attempted_versions": self.attempted,
            "started": self.started,
            "phases": self.phases,
            "outcome": outcome,
            "outcome_detail": words,
        }
        if self.strategy is not None:
            entry["strategy"] = self.strategy
        if failed_at is not None:
            entry["failed_at"] = failed_at
        if outcome == "rolled-back" and self.rollback is not None:
            entry["rolled_back_to"] = self.rollback[1]
        if self.read_only_violation:
            entry["read_only_violation"] = self.read_only_violation
        if self.read_only_window is not None:
            entry["read_only_window_seconds"] = self.read_only_window
        if self.probes:
            entry["probe"] = _probe_total(self.probes)
        return entry
