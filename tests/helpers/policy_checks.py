"""The policy pack's checks run on resources declared under mocks: each resource as the pack
sees it, the stack config the engine passes, and one-property changes of a resource."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from policies.model import Resource, StackConfig, Violation
from policies.rules import policy_named
from tests.helpers.azure_mocks import Registration
from zdd.phases import PhaseSettings


def resource_of(registration: Registration) -> Resource:
    return Resource(
        type=registration.type,
        name=registration.name,
        props=registration.inputs,
        urn=registration.urn,
        protect=registration.protect,
        ignore_changes=tuple(registration.ignore_changes),
    )


def config_for(settings: PhaseSettings, base: Mapping[str, str]) -> StackConfig:
    """The stack config a stack in `settings` has (what the engine passes to the pack)."""
    keys = {
        "phase": str(settings.phase),
        "currentVersion": settings.current_version,
        "targetVersion": settings.target_version,
        "mode": str(settings.mode),
        "acceptDataLoss": "true" if settings.accept_data_loss else None,
        "restorePoint": settings.restore_point,
        "databaseGeneration": str(settings.database_generation),
        "databaseVersion": settings.database_version,
        "migrateTo": settings.migrate_to,
        "restoredFrom": settings.restored_from,
    }
    values = {**base, **{f"zdd:{k}": v for k, v in keys.items() if v is not None}}
    return StackConfig(values=values, secret_keys=frozenset({"zdd:sqlAdminPassword"}))


def named(resources: Sequence[Resource], name: str) -> Resource:
    found = [r for r in resources if r.name == name]
    assert len(found) == 1, f"{name}: {len(found)}"
    return found[0]


def changed(resource: Resource, path: str, value: Any, **options: Any) -> Resource:
    """A copy of `resource` with the property at the dotted `path` set (None removes it)."""
    props = copy.deepcopy(dict(resource.props))
    *parents, last = path.split(".")
    target = props
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return dataclasses.replace(resource, props=props, **options)


def replaced(resources: Sequence[Resource], new: Resource) -> list[Resource]:
    return [new if r.urn == new.urn else r for r in resources]


def check(policy: str, resource: Resource, config: StackConfig) -> list[str]:
    spec = policy_named(policy)
    assert spec.check is not None
    return spec.check(resource, config)


def stack_check(policy: str, resources: Sequence[Resource], config: StackConfig) -> list[Violation]:
    spec = policy_named(policy)
    assert spec.stack_check is not None
    return spec.stack_check(resources, config)
