"""Read the stack's `zdd:*` config once, at the top of the program."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from zdd.phases import (
    DECIDING_KEYS,
    Declaration,
    IllegalTransition,
    InvalidStackConfig,
    Phase,
    PhaseSettings,
    check_transition,
    declare,
    settings_digest,
)


@dataclass(frozen=True)
class ProgramSettings:
    stack: PhaseSettings
    declaration: Declaration
    # Lets the driver tell whether the last update applied the config it has now.
    digest: str


def read_settings(config: pulumi.Config) -> ProgramSettings:
    values = {key: value for key in DECIDING_KEYS if (value := config.get(key)) is not None}
    try:
        stack = PhaseSettings.from_config(values)
    except InvalidStackConfig as exc:
        # A RunError prints as one clear line, without a traceback.
        raise pulumi.RunError(str(exc)) from None
    return ProgramSettings(stack=stack, declaration=declare(stack), digest=settings_digest(values))


def phase_guard(wanted: Phase, *, switches_in_program: bool) -> pulumi.Output[pulumi.Resource]:
    """Refuse an illegal move even when someone runs `pulumi up` by hand (rule 7 of docs/design.md).

    The stack reads its own last `phase` output; every component depends on the result, so an
    illegal move fails before the engine changes anything.
    """
    me = pulumi.StackReference(
        f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    )

    def check(applied: object) -> pulumi.Resource:
        if applied is not None:
            try:
                check_transition(
                    Phase(str(applied)), wanted, switches_in_program=switches_in_program
                )
            except IllegalTransition as exc:
                raise pulumi.RunError(f"refused: {exc}") from None
        return me

    return me.get_output("phase").apply(check)
