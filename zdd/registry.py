"""The targets a stack can name in `zdd:target`, and where each keeps its program and operations.

Adding a target is one line here plus its own modules. Each reference is `module:attribute`,
imported only when a stack names that target: so the program never loads the driver's side, a
cloud SDK loads only for its own stacks, and the driver loads a target's program modules only
where both sides share one client (the local front door's admin socket).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from zdd.errors import BadInput

# This machine: real processes, SQLite and HAProxy; the only target with a default passphrase.
LOCAL_TARGET = "local"
DEFAULT_TARGET = LOCAL_TARGET


class UnknownTarget(BadInput, ValueError):
    """A `zdd:target` that names no registered target."""


@dataclass(frozen=True)
class TargetEntry:
    # `(pulumi.Config) -> infra.program.Target`: the target's components, bound to its config.
    program: str
    # A `zdd.targets.TargetOps`: what the driver's gates and commands need from the target.
    operations: str
    # The program makes the switches itself, each behind its gate (resources): to the clone,
    # then waiting for the primary's drain, before the primary's restore point; back to the
    # primary only once the new primary answered as its version. A deployment that waits for
    # no approval is then one update from `clone` to `return`, and the read-only window holds
    # no engine start. Azure's switches are updates of their own, each after the driver's gate
    # (its front door cannot wait inside the program for a check through the preview address).
    switches_in_program: bool = False


TARGETS: dict[str, TargetEntry] = {
    LOCAL_TARGET: TargetEntry(
        "infra.local.target:local_target", "zdd.targets.local:LOCAL", switches_in_program=True
    ),
    "azure": TargetEntry("infra.azure.target:azure_target", "zdd.targets.azure:AZURE"),
}


def entry(name: str) -> TargetEntry:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTarget(f"target {name!r} is not one of: {', '.join(TARGETS)}") from None


def load(reference: str) -> object:
    """The attribute a `module:attribute` reference names, importing its module."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
