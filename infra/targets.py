"""Build the target a stack names in `zdd:target`, as `zdd.registry` says where it lives."""

from __future__ import annotations

import pulumi

from infra.program import Target
from zdd import registry


def target_for(config: pulumi.Config) -> Target:
    name = config.get("target") or registry.DEFAULT_TARGET
    try:
        program = registry.load(registry.entry(name).program)
    except registry.UnknownTarget as exc:
        raise pulumi.RunError(f"zdd:{exc}") from None
    target = program(config) if callable(program) else None
    if not isinstance(target, Target):
        raise TypeError(f"the registry's program for target {name!r} does not build a Target")
    return target
