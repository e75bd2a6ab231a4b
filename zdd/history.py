"""The history of a stack's deployments and recoveries: each update the driver runs carries a
message that says which action, deployment and phase it was; `zdd history` reads them back."""

from __future__ import annotations

import json
from typing import Any

from zdd.phases import Phase
from zdd.stack import Stack

# Marks the update messages the driver wrote, among any others of the stack's history.
HISTORY_PREFIX = "zdd "


def history_message(record: dict[str, Any]) -> str:
    return HISTORY_PREFIX + json.dumps(record, sort_keys=True)


def read_history(stack: Stack) -> list[dict[str, Any]]:
    """Past deployments and recoveries, from the update messages kept with the stack."""
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
    return group_history(entries)


def group_history(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group per-phase updates (newest first, as Pulumi lists them) into deployments."""
    deployments: dict[str, dict[str, Any]] = {}
    for update in reversed(updates):
        key = update.get("deployment") or f"{update['action']}@{update['started']}"
        entry = deployments.setdefault(
            key,
            {
                "deployment": update.get("deployment"),
                "actions": [],
                "from_version": update.get("from"),
                "to_version": update.get("to"),
                "started": update["started"],
                "phases": [],
                "outcome": "in-progress",
            },
        )
        if update["action"] not in entry["actions"]:
            entry["actions"].append(update["action"])
        entry["to_version"] = update.get("to")
        entry["phases"].append({"name": update["phase"], "seconds": update["seconds"]})
        if update.get("read_only_violation"):
            entry["read_only_violation"] = update["read_only_violation"]
        if update["result"] != "succeeded":
            entry["outcome"] = "failed"
        elif update["phase"] == Phase.IDLE:
            entry["outcome"] = "aborted" if "abort" in entry["actions"] else "succeeded"
        else:
            entry["outcome"] = "in-progress"
    return list(reversed(deployments.values()))
