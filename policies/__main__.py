"""The smooth-deploy policy pack: `pulumi preview/up --policy-pack policies`.

The engine starts this file through the Python language host's `RunPlugin`
(`python policies <engine address>`); it serves the Analyzer protocol until the engine stops
it. The policies themselves are the pure checks of `policies.rules` (the table) and of the
targets' modules (`policies.local`, `policies.azure`).

The stack config: the engine passes the stack's config to every policy pack
(`ConfigureStack`), but pulumi-policy 1.21 keeps only the stack's tags from that call. We wrap
the call to also keep the `zdd:*` values (never secret ones), so that `clone-read-only` can
read the acknowledgement (`zdd:mode`, `zdd:acceptDataLoss`) and the database checks the
generation and restore point. The older way of starting packs passes the config in
`PULUMI_CONFIG` instead; both are read. Without either, checks that need an acknowledgement
fail closed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# `python policies` puts this directory, not the project, on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import policy as policy_sdk

from policies.model import Resource, ResourceCheck, StackCheck, StackConfig
from policies.rules import POLICIES, PolicySpec

PACK_NAME = "smooth-deploy"
NAMESPACE = "zdd:"

_stack_config: dict[str, str] = {}
_secret_keys: set[str] = set()
_received = False


def _keep_stack_config() -> None:
    """Wrap the SDK's `ConfigureStack` so that it also keeps the stack's `zdd:*` config."""
    servicer = getattr(policy_sdk, "_PolicyAnalyzerServicer", None)
    original = getattr(servicer, "ConfigureStack", None)
    if servicer is None or original is None:
        return

    def configure_stack(self: Any, request: Any, context: Any) -> Any:
        global _received
        secret = set(request.config_secret_keys)
        _secret_keys.update(key for key in secret if key.startswith(NAMESPACE))
        _stack_config.update(
            {
                key: value
                for key, value in request.config.items()
                if key.startswith(NAMESPACE) and key not in secret
            }
        )
        _received = True
        return original(self, request, context)

    servicer.ConfigureStack = configure_stack


def _config_from_environment() -> dict[str, str]:
    try:
        values = json.loads(os.environ.get("PULUMI_CONFIG") or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(values, dict):
        return {}
    return {str(k): str(v) for k, v in values.items() if str(k).startswith(NAMESPACE)}


def stack_config() -> StackConfig:
    from_environment = _config_from_environment()
    return StackConfig(
        values={**from_environment, **_stack_config},
        known=_received or bool(from_environment),
        secret_keys=frozenset(_secret_keys),
    )


def _resource(source: Any, dependencies: Mapping[str, Iterable[Any]] | None = None) -> Resource:
    """The pack's view of the SDK's resource: one under validation (its inputs) or one of the
    stack's (its outputs, with the URNs each property's value came from)."""
    return Resource(
        type=source.resource_type,
        name=source.name,
        props=source.props,
        urn=source.urn,
        protect=bool(source.opts.protect),
        ignore_changes=tuple(source.opts.ignore_changes or ()),
        dependencies={
            key: tuple(dependency.urn for dependency in values)
            for key, values in (dependencies or {}).items()
        },
    )


def _resource_policy(spec: PolicySpec, check: ResourceCheck) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(_resource(args), stack_config()):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=spec.name,
        description=spec.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _stack_policy(spec: PolicySpec, check: StackCheck) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            _resource(resource, resource.property_dependencies) for resource in args.resources
        ]
        for violation in check(resources, stack_config()):
            report_violation(violation.message, violation.urn)

    return StackValidationPolicy(
        name=spec.name,
        description=spec.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    built: list[ResourceValidationPolicy | StackValidationPolicy] = []
    for spec in POLICIES:
        if spec.check is not None:
            built.append(_resource_policy(spec, spec.check))
        if spec.stack_check is not None:
            built.append(_stack_policy(spec, spec.stack_check))
    return built


if __name__ == "__main__":
    _keep_stack_config()
    PolicyPack(
        name=PACK_NAME,
        policies=list(policies()),
        enforcement_level=EnforcementLevel.MANDATORY,
        description="Guardrails of a smooth deployment: the data is never put at risk.",
    )
