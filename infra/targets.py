"""Choose the target named by `zdd:target` and bind its components to its settings."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.program import Target

TARGETS = ("local", "azure")


def target_for(config: pulumi.Config) -> Target:
    name = config.get("target") or "local"
    if name == "local":
        return _local(config)
    if name == "azure":
        from infra.azure.target import azure_target

        return azure_target(config)
    raise pulumi.RunError(f"zdd:target {name!r} is not one of: {', '.join(TARGETS)}")


def _local(config: pulumi.Config) -> Target:
    from infra.local.components import LocalDatabase, LocalFrontDoor, LocalSettings, LocalSite

    settings = LocalSettings(
        state_dir=Path(config.require("stateDir")),
        base_port=config.require_int("basePort"),
    )
    return Target(
        name="local",
        database=lambda name, args, opts: LocalDatabase(name, args, settings, opts),
        site=lambda name, args, opts: LocalSite(name, args, settings, opts),
        front_door=lambda name, args, opts: LocalFrontDoor(name, args, settings, opts),
    )
