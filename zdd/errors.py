"""Errors a caller can tell apart, each with the exit code the `zdd` command uses."""

from __future__ import annotations


class ZddError(Exception):
    """Base class: every error here prints as one line and exits non-zero."""

    exit_code = 1


class BadInput(ZddError):
    """The command line or the stack config is wrong; nothing was changed."""

    exit_code = 2


class RefusedTransition(ZddError):
    """The action is not legal in the stack's current phase; nothing was changed."""

    exit_code = 3


class GateFailed(ZddError):
    """A check between phases failed; the stack stays in the last phase that was reached."""

    exit_code = 4


class EngineFailed(ZddError):
    """A Pulumi update, preview or destroy failed."""

    exit_code = 5


class StackBusy(ZddError):
    """Another driver holds the stack."""

    exit_code = 6


class PolicyViolation(ZddError):
    """A mandatory policy of the policy pack refused the change; nothing was changed."""

    exit_code = 7
