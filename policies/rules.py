"""The guardrails of a smooth deployment, as pure functions (no Pulumi engine, no I/O).

Each check takes what the engine shows a policy pack, reduced to plain data: a `Resource`
(type, logical name, properties, options) or every resource of the stack, plus the stack's
`zdd:*` config (`StackConfig`, both in `policies.model`). It returns the violations it finds,
as sentences; no violation means the check passes. `policies/__main__.py` turns `POLICIES`
into a `pulumi_policy.PolicyPack`; the tests call the checks directly.

This module holds the pack's table: every policy, with what it guards. Each target's module
(`policies.local`, `policies.azure`) holds its own checks, by the policy they enforce; a
policy's check is those of every target in `TARGETS`, so adding a target is one line here plus
its own module.

Resource checks see a resource's inputs before the engine changes it, so a violation stops
`pulumi up` before that resource is touched. Stack checks see every resource of the update's
result (their outputs) once all resources are registered: in a preview they stop the
deployment before anything changes; in an update they run after the changes and fail it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policies import azure, local
from policies.model import (
    Resource,
    ResourceCheck,
    StackCheck,
    StackConfig,
    TargetChecks,
    Violation,
)
from zdd.phases import MIN_BACKUP_RETENTION_DAYS

# In the order their violations are reported.
TARGETS: tuple[TargetChecks, ...] = (local.CHECKS, azure.CHECKS)


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    check: ResourceCheck | None = None
    stack_check: StackCheck | None = None


def _resource_policy(name: str, description: str) -> PolicySpec:
    checks = [target.resource[name] for target in TARGETS if name in target.resource]

    def check(resource: Resource, config: StackConfig) -> list[str]:
        return [problem for each in checks for problem in each(resource, config)]

    return PolicySpec(name, description, check=check)


def _stack_policy(name: str, description: str) -> PolicySpec:
    checks = [target.stack[name] for target in TARGETS if name in target.stack]

    def stack_check(resources: Sequence[Resource], config: StackConfig) -> list[Violation]:
        return [problem for each in checks for problem in each(resources, config)]

    return PolicySpec(name, description, stack_check=stack_check)


def _table(*specs: PolicySpec) -> tuple[PolicySpec, ...]:
    """The pack's policies, refusing a target's check that none of them would run: a misnamed
    check would otherwise leave its guardrail silently off."""
    resource_names = {spec.name for spec in specs if spec.check is not None}
    stack_names = {spec.name for spec in specs if spec.stack_check is not None}
    for target in TARGETS:
        stray = (set(target.resource) - resource_names) | (set(target.stack) - stack_names)
        if stray:
            raise ValueError(f"{target.name} has checks for no policy of the pack: {sorted(stray)}")
    return specs


# -- the pack ----------------------------------------------------------------------------------

POLICIES: tuple[PolicySpec, ...] = _table(
    _resource_policy(
        "clone-read-only",
        "The clone runs ReadOnly unless the stack acknowledges data loss "
        "(zdd:mode read-write and zdd:acceptDataLoss true) or it serves the primary database "
        "itself (zdd:strategy compatible).",
    ),
    _resource_policy(
        "primary-database-protected",
        "The primary database is protected and never deleted or replaced outside a rollback "
        "with database.",
    ),
    # A resource the program stops declaring is deleted by the update.
    _stack_policy(
        "primary-database-present",
        "The stack keeps its primary database of the current generation (never deleted).",
    ),
    _resource_policy(
        "backup-retention-7-days",
        f"Short-term backup retention of {MIN_BACKUP_RETENTION_DAYS} days or more.",
    ),
    _stack_policy(
        "backup-retention-covers-primary",
        f"Every primary database has a backup retention of {MIN_BACKUP_RETENTION_DAYS} days "
        "or more.",
    ),
    _resource_policy("web-app-https-only", "Web apps accept HTTPS only."),
    _resource_policy("web-app-tls-1-2", "Web apps require TLS 1.2 or newer."),
    _resource_policy("web-app-ftps-disabled", "Web apps have FTP(S) disabled."),
    _resource_policy(
        "sql-server-not-open-to-all",
        "The SQL server's firewall is not open to every address.",
    ),
    _resource_policy("sql-server-tls-1-2", "The SQL server requires TLS 1.2 or newer."),
    _resource_policy(
        "postgres-server-tls",
        "A PostgreSQL flexible server's parameters keep requiring TLS 1.2 or newer.",
    ),
    _resource_policy(
        "front-door-active-origin",
        "The front door sends public traffic to exactly one of its origins.",
    ),
    _stack_policy(
        "one-public-origin",
        "Exactly one origin takes public traffic at a time.",
    ),
    _resource_policy(
        "clone-database-is-copy",
        "The clone's database is a copy of the primary's.",
    ),
)


def policy_named(name: str) -> PolicySpec:
    for spec in POLICIES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def evaluate(
    resources: Iterable[Resource], config: StackConfig
) -> dict[str, list[str | Violation]]:
    """Every policy over `resources` (resource checks on each, stack checks on all): the
    violations by policy name, only for policies that have some."""
    resources = list(resources)
    found: dict[str, list[str | Violation]] = {}
    for spec in POLICIES:
        problems: list[str | Violation] = []
        if spec.check is not None:
            for resource in resources:
                problems.extend(spec.check(resource, config))
        if spec.stack_check is not None:
            problems.extend(spec.stack_check(resources, config))
        if problems:
            found[spec.name] = problems
    return found
