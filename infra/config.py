"""Read the stack's `zdd:*` config once, at the top of the program."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from zdd.phases import Declaration, InvalidStackConfig, StackSettings, declare

# The keys that decide what exists; target-specific keys are read by the target.
PHASE_KEYS = (
    "phase", "currentVersion", "targetVersion", "mode", "acceptDataLoss",
    "restorePoint", "databaseGeneration", "databaseVersion",
)


@dataclass(frozen=True)
class ProgramSettings:
    stack: StackSettings
    declaration: Declaration


def read_settings(config: pulumi.Config) -> ProgramSettings:
    values = {key: value for key in PHASE_KEYS if (value := config.get(key)) is not None}
    try:
        stack = StackSettings.from_config(values)
    except InvalidStackConfig as exc:
        # A RunError prints as one clear line, without a traceback.
        raise pulumi.RunError(str(exc)) from None
    return ProgramSettings(stack=stack, declaration=declare(stack))
