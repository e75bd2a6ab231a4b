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
    # The program verifies the new primary (a resource) before its front door switches back to
    # it, so a deployment that waits for no approval switches back in the update that deploys
    # the primary (`cutover` straight to `return`). Azure's switch back is an update of its
    # own, after the driver's gate has verified the primary through the preview address.
    verifies_before_switch: bool = False


TARGETS: dict[str, TargetEntry] = {
    LOCAL_TARGET: TargetEntry(
        "infra.local.target:local_target", "zdd.targets.local:LOCAL", verifies_before_switch=True
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
