"""What the driver needs to know about a target: versions, stack config, and the drain source."""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from infra.local.haproxy import AdminSocket, FrontDoorError
from zdd import appspec
from zdd.appspec import AppSpec
from zdd.environment import Environment, ports_dir

if TYPE_CHECKING:
    from zdd.archive import LostWrites
from zdd.errors import BadInput, GateFailed
from zdd.gates import APP_IDENTITY_HEADER
from zdd.phases import SERVED_BY_HEADER, Mode, is_valid_version

TARGET_NAMES = ("local", "azure")


@dataclass(frozen=True)
class GateTimeouts:
    """Seconds each gate waits (the defaults of `zdd.gates`); a cloud front door needs minutes."""

    healthy: float = 30.0
    public_origin: float = 30.0
    drained: float = 60.0


@dataclass(frozen=True)
class TargetOps:
    name: str
    # Refuses a version the stack cannot deploy; gets the stack's config (its app spec).
    resolve_version: Callable[[str, Mapping[str, str]], None]
    initial_config: Callable[[Environment, str], dict[str, str]]
    # In-flight public requests to an origin ("primary" or "clone"), for the drain check.
    in_flight: Callable[[Mapping[str, Any], str], int]
    timeouts: GateTimeouts = field(default_factory=GateTimeouts)
    # What a read-write clone took, from the archive its database was kept as (None: this
    # target keeps the archive but cannot compare rows).
    clone_writes: Callable[[Path], LostWrites] | None = None
    # Rule 9, checked before a read-only clone is destroyed: what changed in its database
    # since it was copied, in words (None: nothing, or this target cannot tell).
    read_only_violation: Callable[[Environment, str, Mapping[str, Any]], str | None] | None = None
    # The response header that names the origin which answered a public request.
    served_by_header: str = APP_IDENTITY_HEADER
    # Refuses to start (BadInput, one line) when the target cannot be reached at all, for
    # example without cloud credentials; called before anything changes.
    check_ready: Callable[[], None] = lambda: None
    # A cloud front door: waits until a traffic switch is deployed everywhere (plus a settle
    # time), returning when it was confirmed; then judges an origin's drain from that moment.
    wait_switched: Callable[[Mapping[str, Any], str, Callable[[str], None]], datetime] | None = None
    wait_drained: (
        Callable[[Mapping[str, Any], str, Callable[[str], None], datetime], None] | None
    ) = None
    # A restore point id taken on the target's own clock (default: `next_step`'s).
    take_restore_point: Callable[[], str] | None = None
    # After `pulumi destroy`: removes what the stack had outside its resources (locally its
    # folder, and any process of its own a failed update left behind).
    forget: Callable[[Environment, str], None] = lambda _env, _stack: None


def check_version(
    version: str, ops: TargetOps, config: Mapping[str, str] = MappingProxyType({})
) -> None:
    if not is_valid_version(version):
        raise BadInput(
            f"version {version!r} is malformed: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. v2 or 2.9.2)"
        )
    ops.resolve_version(version, config)


def app_spec(config: Mapping[str, str]) -> AppSpec:
    """The stack's app spec (`zdd:app`); a stack without one cannot run a site."""
    try:
        spec = appspec.from_config(config)
    except appspec.InvalidAppSpec as exc:
        raise BadInput(str(exc)) from None
    if spec is None:
        raise BadInput(
            f"the stack has no app spec (zdd:{appspec.CONFIG_KEY}); create it with "
            "`zdd init --app FILE`"
        )
    return spec


# -- local -------------------------------------------------------------------------------


def _local_resolve(version: str, config: Mapping[str, str]) -> None:
    """A version is deployable when its release folder exists."""
    spec = app_spec(config)
    if spec.release_kind is not appspec.ReleaseKind.FOLDER:
        raise BadInput(
            f"app spec `releases` {spec.releases!r} is a {spec.release_kind} for a cloud web "
            "app: the local target runs a release folder per version (releases/{version})"
        )
    release = Path(spec.release(version))
    if not release.is_dir():
        raise BadInput(
            f"app spec `releases`: version {version!r} has no release folder {release}; "
            "build that release there, or fix `releases`"
        )


def _free_port_block(registry: Path, size: int = 3, attempts: int = 200) -> int:
    """A base port with `size` free ports after it (front door, primary, clone), none of them
    held by another stack in the port registry (whose processes may be down just now)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 40000, 10)
        if any((registry / str(base + offset)).exists() for offset in range(size)):
            continue
        try:
            for offset in range(size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise BadInput("found no block of free local ports; set zdd:basePort yourself")


def _local_initial_config(env: Environment, stack: str) -> dict[str, str]:
    return {
        "stateDir": str(env.stack_dir(stack)),
        "basePort": str(_free_port_block(ports_dir(env.state_root))),
    }


def _local_in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    """The origin's sessions and queue in HAProxy's own counters; a server still taking new
    requests never drains."""
    try:
        server = AdminSocket(outputs["front_door_socket"]).servers()[origin]
    except FrontDoorError as exc:
        raise GateFailed(f"drain check: the front door does not answer ({exc})") from None
    return server.in_flight if not server.takes_traffic else 1_000_000


def _local_read_only_violation(
    env: Environment, stack: str, outputs: Mapping[str, Any]
) -> str | None:
    from infra.local.providers import content_digest

    copied = outputs.get("clone_database_digest")
    database = env.stack_dir(stack) / str(outputs.get("clone_database"))
    if outputs.get("mode") != Mode.READ_ONLY or not copied or not database.exists():
        return None
    now = content_digest(database)
    if now == copied:
        return None
    return (
        f"read-only violation: the read-only clone's database {database.name} changed after it "
        f"was copied (content digest {copied[:12]} then, {now[:12]} now): the site wrote to "
        "it in ReadOnly mode; make its `start` open `{database_url}`, which is read-only there"
    )


def _local_clone_writes(archive: Path) -> LostWrites:
    from zdd.archive import clone_writes

    return clone_writes(archive)


def _local_forget(env: Environment, stack: str) -> None:
    """Only the stack's own folder (logs, retired database generations), derived from its name,
    never one its config names; archives and other stacks' folders stay. Only processes whose
    owner id names that folder are stopped."""
    from infra.local import processes

    folder = env.stack_dir(stack)
    for pid in processes.find_owned_under(folder):
        processes.terminate(pid, timeout=5)
    shutil.rmtree(folder, ignore_errors=True)


LOCAL = TargetOps(
    "local",
    _local_resolve,
    _local_initial_config,
    _local_in_flight,
    clone_writes=_local_clone_writes,
    read_only_violation=_local_read_only_violation,
    served_by_header=SERVED_BY_HEADER,
    forget=_local_forget,
)


def ops_for(name: str) -> TargetOps:
    if name == "local":
        return LOCAL
    if name == "azure":
        from zdd.azure import AZURE

        return AZURE
    raise BadInput(f"target {name!r} is not one of: {', '.join(TARGET_NAMES)}")
