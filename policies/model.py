"""What every check of the pack works on: a resource and the stack's config as plain data.

Both targets' modules (`policies.local`, `policies.azure`) and the pack's table
(`policies.rules`) import these; they live apart so that the table can gather the targets'
checks without the targets importing the table. Also here: the shape of one target's part of
the pack (`TargetChecks`), and the one judgement every target applies alike (the clone's
database mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from zdd.phases import (
    DatabaseMode,
    InvalidStackConfig,
    Mode,
    Strategy,
    accepts_data_loss,
    database_generation,
)

# -- what the engine shows ---------------------------------------------------------------------

DYNAMIC = "pulumi-python:dynamic:Resource"


@dataclass(frozen=True)
class Resource:
    """One resource as a policy sees it. `props` are inputs in resource checks and outputs in
    stack checks; `dependencies` maps a property to the URNs its value came from."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return self.type == DYNAMIC

    def prop(self, key: str, default: Any = None) -> Any:
        value = self.props.get(key, default)
        return default if value is None else value


@dataclass(frozen=True)
class StackConfig:
    """The stack's config as the engine passes it to the pack (`zdd:mode` -> `read-write`).

    `known` is False when the engine did not pass any: then every check that needs an
    acknowledgement fails closed, and the checks that compare with the config fall back to
    what holds for every legal config."""

    values: Mapping[str, str] = field(default_factory=dict)
    known: bool = True
    # Keys whose values are secret: the pack never sees those values.
    secret_keys: frozenset[str] = frozenset()

    def get(self, key: str) -> str | None:
        value = self.values.get(f"zdd:{key}")
        return value if value else None

    def is_secret(self, key: str) -> bool:
        return f"zdd:{key}" in self.secret_keys

    @property
    def unprefixed(self) -> dict[str, str]:
        """The set `zdd:*` values, keyed without the namespace as `zdd.phases` reads them."""
        return {
            key.removeprefix("zdd:"): value
            for key, value in self.values.items()
            if key.startswith("zdd:") and value
        }

    @property
    def data_loss_acknowledged(self) -> bool:
        """ReadWrite needs both, as the program and the driver require, in plain config: an
        acknowledgement nobody can read in the stack's config is no acknowledgement."""
        return (
            self.get("mode") == Mode.READ_WRITE
            and accepts_data_loss(self.unprefixed)
            and not self.is_secret("acceptDataLoss")
        )

    @property
    def clone_shares_primary_database(self) -> bool:
        """The compatible strategy: the clone is a second instance on the primary database, so
        what it writes stays there (a rehearsal proved the release runs on the new schema)."""
        return self.get("strategy") == Strategy.COMPATIBLE

    @property
    def rehearsing(self) -> bool:
        """A rehearsal the engine makes (`zdd:rehearse`): the clone tries the current release
        on a migrated copy of its own, outside the front door; its writes are the test's."""
        return bool(self.get("rehearse"))

    @property
    def generation(self) -> int | None:
        """The primary database's generation, when the config says which one."""
        if not self.known:
            return None
        try:
            return database_generation(self.unprefixed)
        except InvalidStackConfig:
            return None

    @property
    def restoring(self) -> bool:
        """A rollback with database is in progress: this deployment restored the primary
        database from its own restore point."""
        restored_from = self.get("restoredFrom")
        return restored_from is not None and restored_from == self.get("restorePoint")

    @property
    def state_dir(self) -> PurePath | None:
        state_dir = self.get("stateDir")
        return PurePath(state_dir) if state_dir else None


@dataclass(frozen=True)
class Violation:
    message: str
    # The resource at fault (stack checks); None for the stack as a whole.
    urn: str | None = None


ResourceCheck = Callable[[Resource, StackConfig], list[str]]
StackCheck = Callable[[Sequence[Resource], StackConfig], list[Violation]]


@dataclass(frozen=True)
class TargetChecks:
    """One target's part of the pack: its checks, by the name of the policy each enforces.

    Every check sees every resource of the update and finds nothing in another target's."""

    name: str
    resource: Mapping[str, ResourceCheck]
    stack: Mapping[str, StackCheck] = field(default_factory=dict)


# -- the clone runs ReadOnly unless the stack acknowledges data loss ---------------------------


def clone_mode_problems(
    resource: Resource, modes: Mapping[str, Any], config: StackConfig
) -> list[str]:
    """What is wrong with the clone's database `modes` (by the setting that holds each)."""
    problems = []
    for key, mode in modes.items():
        if mode == DatabaseMode.READ_ONLY:
            continue
        if mode == DatabaseMode.READ_WRITE and (
            config.data_loss_acknowledged
            or config.clone_shares_primary_database
            or config.rehearsing
        ):
            continue
        if mode == DatabaseMode.READ_WRITE:
            why = (
                "zdd:acceptDataLoss is a secret; the acknowledgement must be plain config"
                if config.is_secret("acceptDataLoss")
                else "the stack does not acknowledge data loss (zdd:mode read-write and "
                "zdd:acceptDataLoss true)"
            )
            problems.append(
                f"{resource.name}: {key} is ReadWrite but {why}: writes to the clone would be "
                "lost when it is destroyed"
            )
        else:
            problems.append(f"{resource.name}: {key} is {mode!r}, not {DatabaseMode.READ_ONLY}")
    return problems
