"""Errors a caller can tell apart, each with the exit code the `zdd` command uses.

This is the one mapping from failures to exit codes: the pure modules' own errors (an illegal
move, a bad stack config, a bad app spec, an unknown target) subclass the class of their exit
code, so no layer translates them, and the command's `--help` lists the codes from here.
"""

from __future__ import annotations

# The exit code of a goal reached; every error class below has its own.
SUCCESS_EXIT_CODE = 0


class ZddError(Exception):
    """Base class: every error here prints as one line and exits non-zero."""

    exit_code = 1
    meaning = "unexpected error"


class BadInput(ZddError):
    """The command line or the stack config is wrong; nothing was changed."""

    exit_code = 2
    meaning = "bad input (nothing changed)"


class RefusedTransition(ZddError):
    """The action is not legal in the stack's current phase; nothing was changed."""

    exit_code = 3
    meaning = "refused transition (nothing changed)"


class GateFailed(ZddError):
    """A check between phases failed; the stack stays in the last phase that was reached."""

    exit_code = 4
    meaning = "failed gate (the stack stays in the last phase reached)"


class EngineFailed(ZddError):
    """A Pulumi update, preview or destroy failed."""

    exit_code = 5
    meaning = "engine failure"


class StackBusy(ZddError):
    """Another driver holds the stack."""

    exit_code = 6
    meaning = "stack busy (another driver holds it)"


class PolicyViolation(ZddError):
    """A mandatory policy of the policy pack refused the change; nothing was changed."""

    exit_code = 7
    meaning = "policy violation (nothing changed)"


def exit_codes() -> dict[int, str]:
    """Every exit code of the `zdd` command and what it means, in order."""
    codes = {SUCCESS_EXIT_CODE: "goal reached"}
    errors: list[type[ZddError]] = [ZddError, *ZddError.__subclasses__()]
    for error in errors:
        if error.__module__ == __name__:
            codes[error.exit_code] = error.meaning
    return dict(sorted(codes.items()))


def exit_codes_text() -> str:
    return "Exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in exit_codes().items())
