"""smooth-deploy: zero-downtime deployments of a database-backed web site, driven by Pulumi.

The public API is what a pipeline script needs to run a smooth deployment the way the `zdd`
command does, in the same process:

    import json
    import sys
    from pathlib import Path

    import zdd

    stack = zdd.open_stack("site")          # made by `zdd init` or zdd.init_stack("site", "v1")
    try:
        result = stack.deploy(
            "v2",
            on_failure="rollback-code-only",  # a new primary that fails gives way by itself
            probe=zdd.ProbeSettings(rate=200, chart=Path("timeline.png")),
        )
    except zdd.ZddError as exc:             # one class per exit code, as `zdd` exits
        report = stack.last_result.as_json() if stack.last_result else {}
        print(json.dumps({**report, "error": str(exc)}))
        sys.exit(exc.exit_code)
    print(result.outcome, result.read_only_window_seconds, stack.status().current_version)

Every action runs to its end (or, with `wait_for_approval=True`, until the new primary is
verified; `complete()` goes on) and returns a `DeployResult`, whose `as_json()` is what
`zdd ... --json` prints. A failure raises one of the `ZddError` classes below, each with the
`exit_code` the command uses; malformed input is refused before any engine call. A stack is
driven by one process at a time (`StackBusy` otherwise), and `resume()` continues whatever a
dead driver left. The engine's variables (backend, Pulumi home, passphrase) come from the
environment as for the command; only `local` stacks have a default passphrase.

Importing `zdd` loads no Pulumi module: the Pulumi program imports this package's pure parts,
and the API's modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zdd.errors import (
    BadInput,
    EngineFailed,
    GateFailed,
    PolicyViolation,
    RefusedTransition,
    StackBusy,
    ZddError,
)
from zdd.phases import Mode

if TYPE_CHECKING:
    from zdd.actions import Action
    from zdd.api import ActionRequest, ProbeSettings, SmoothStack, init_stack, open_stack
    from zdd.rehearsal import RehearsalPlan, RehearsalReport, StrategyChoice
    from zdd.results import DeployResult, PhaseTiming, Status
    from zdd.targets import LogLocation

# Names loaded on first use, from the module that defines them.
_LAZY = {
    "open_stack": "zdd.api",
    "init_stack": "zdd.api",
    "SmoothStack": "zdd.api",
    "ActionRequest": "zdd.api",
    "ProbeSettings": "zdd.api",
    "Action": "zdd.actions",
    "DeployResult": "zdd.results",
    "PhaseTiming": "zdd.results",
    "Status": "zdd.results",
    "LogLocation": "zdd.targets",
    "RehearsalPlan": "zdd.rehearsal",
    "RehearsalReport": "zdd.rehearsal",
    "StrategyChoice": "zdd.rehearsal",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zdd' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Action",
    "ActionRequest",
    "BadInput",
    "DeployResult",
    "EngineFailed",
    "GateFailed",
    "LogLocation",
    "Mode",
    "PhaseTiming",
    "PolicyViolation",
    "ProbeSettings",
    "RefusedTransition",
    "RehearsalPlan",
    "RehearsalReport",
    "SmoothStack",
    "StackBusy",
    "Status",
    "StrategyChoice",
    "ZddError",
    "init_stack",
    "open_stack",
]
