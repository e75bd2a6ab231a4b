"""What the driver needs from a target (`TargetOps`), and the operations of the stack's target."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from zdd import appspec, registry
from zdd.appspec import AppSpec
from zdd.archive import LostWrites
from zdd.console import Say
from zdd.environment import Environment
from zdd.errors import BadInput
from zdd.health import APP_IDENTITY_HEADER
from zdd.phases import DRAIN_TIMEOUT_SECONDS, RestorePointTaken, is_valid_version

if TYPE_CHECKING:
    from zdd.rehearsal import Rehearsal, RehearsalEngine


@dataclass(frozen=True)
class GateTimeouts:
    """Seconds each gate waits (the defaults of `zdd.gates`); a cloud front door needs minutes."""

    healthy: float = 30.0
    public_origin: float = 30.0
    drained: float = DRAIN_TIMEOUT_SECONDS


@dataclass(frozen=True)
class LogLocation:
    """Where a component's log is: a file on this machine, or, for a cloud target, where the
    cloud keeps it (`where`, in words with the command to read it)."""

    component: str
    path: Path | None
    where: str


@dataclass(frozen=True)
class RehearsalRequest:
    """A rehearsal of `version` asked of a stack at rest: its config and the outputs of its
    last update, and the driver's engine for a copy only the engine can make (a cloud copy)."""

    env: Environment
    stack: str
    config: Mapping[str, str]
    outputs: Mapping[str, Any]
    version: str
    engine: RehearsalEngine


@dataclass(frozen=True)
class TargetOps:
    name: str
    # Refuses a version the stack cannot deploy; gets the stack's config (its app spec).
    resolve_version: Callable[[str, Mapping[str, str]], None]
    initial_config: Callable[[Environment, str], dict[str, str]]
    # In-flight public requests to an origin ("primary" or "clone"), for the drain check.
    in_flight: Callable[[Mapping[str, Any], str], int]
    timeouts: GateTimeouts = field(default_factory=GateTimeouts)
    # What a read-write clone took, from the archive its database was kept as and the outputs
    # of the update before the one that archived it (None: this target keeps the archive but
    # cannot compare rows).
    clone_writes: Callable[[Environment, str, Mapping[str, Any], Path], LostWrites] | None = None
    # Rule 9 of docs/design.md, checked before a read-only clone is destroyed: what changed in
    # its database since it was copied, in words (None: nothing, or this target cannot tell).
    read_only_violation: Callable[[Environment, str, Mapping[str, Any]], str | None] | None = None
    # The response header that names the origin which answered a public request.
    served_by_header: str = APP_IDENTITY_HEADER
    # Refuses to start (BadInput, one line) when the target cannot be reached at all, for
    # example without cloud credentials; called before anything changes.
    check_ready: Callable[[], None] = lambda: None
    # A cloud front door: waits until a traffic switch is deployed everywhere (plus a settle
    # time), returning when it was confirmed; then judges an origin's drain from that moment.
    wait_switched: Callable[[Mapping[str, Any], str, Say], datetime] | None = None
    wait_origin_idle: Callable[[Mapping[str, Any], str, Say, datetime], None] | None = None
    # Before a rollback with database: what is wrong with the proven restore point now (it
    # changed or went since it was taken), in words; None when it still holds what was recorded.
    # Absent: the target cannot read a restore point before it restores it.
    restore_point_problem: Callable[[Environment, str, RestorePointTaken], str | None] | None = None
    # A cloud front door's counters: before traffic leaves an origin, they are shown to see
    # requests to it (a drain judged from counters that cannot see it would pass at once).
    prove_counted: Callable[[Mapping[str, Any], str, Say], None] | None = None
    # A restore point id taken on the target's own clock (default: the driver's).
    take_restore_point: Callable[[], str] | None = None
    # Before a deployment: why the primary database could not be restored to a point taken now
    # (a cloud database before its first backup), in words; None when it could.
    restorable_problem: Callable[[Mapping[str, Any]], str | None] | None = None
    # Before a rollback with database: waits until the target can restore to the restore point
    # (a cloud database's log backup covers it), or refuses one it never can.
    wait_restorable: Callable[[Mapping[str, Any], str, Say], None] | None = None
    # Where a component's log is (`zdd logs`), from the stack's name and config (None: this
    # target cannot say).
    log_of: Callable[[Environment, str, Mapping[str, str], str], LogLocation] | None = None
    # After `pulumi destroy`: removes what the stack had outside its resources (locally its
    # folder, and any process of its own a failed update left behind).
    forget: Callable[[Environment, str], None] = lambda _env, _stack: None
    # After a rollback with database on the compatible path, before the clone goes: what the
    # database it kept serving took since the restore point (outputs of the last update).
    writes_after_restore: (
        Callable[[Environment, str, Mapping[str, Any]], LostWrites | None] | None
    ) = None
    # What a rehearsal of a version does on the stack; None: this target cannot rehearse, so
    # its deployments take the clone path.
    rehearsal: Callable[[RehearsalRequest], Rehearsal] | None = None


def check_version_format(version: str) -> None:
    """Refuse a malformed version before any stack is read (no engine call)."""
    if not is_valid_version(version):
        raise BadInput(
            f"version {version!r} is malformed: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. v2 or 2.9.2)"
        )


def check_version(
    version: str, ops: TargetOps, config: Mapping[str, str] = MappingProxyType({})
) -> None:
    check_version_format(version)
    ops.resolve_version(version, config)


def app_spec(config: Mapping[str, str]) -> AppSpec:
    """The stack's app spec (`zdd:app`); a stack without one cannot run a site."""
    spec = appspec.from_config(config)
    if spec is None:
        raise BadInput(
            f"the stack has no app spec (zdd:{appspec.CONFIG_KEY}); store one with "
            "`zdd app set --stack STACK FILE`"
        )
    return spec


def ops_for(name: str) -> TargetOps:
    """The operations of the target a stack names in `zdd:target`."""
    ops = registry.load(registry.entry(name).operations)
    if not isinstance(ops, TargetOps):
        raise TypeError(f"the registry's operations for target {name!r} are not a TargetOps")
    return ops
