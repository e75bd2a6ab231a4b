"""What the driver needs to know about a target: versions, stack config, and the drain source."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from zdd.environment import Environment

if TYPE_CHECKING:
    from zdd.archive import LostWrites
from zdd.errors import BadInput, GateFailed
from zdd.phases import is_valid_version

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
    resolve_version: Callable[[str], None]
    initial_config: Callable[[Environment, str], dict[str, str]]
    # In-flight public requests to an origin ("primary" or "clone"), for the drain check.
    in_flight: Callable[[Mapping[str, Any], str], int]
    timeouts: GateTimeouts = field(default_factory=GateTimeouts)
    # Archives a read-write clone's database and reports what it was given, before it goes.
    archive_clone: (
        Callable[[Environment, str, Mapping[str, str], Mapping[str, Any]], LostWrites] | None
    ) = None


def check_version(version: str, ops: TargetOps) -> None:
    if not is_valid_version(version):
        raise BadInput(f"version {version!r} is malformed: expected v<number>[.<number>][-<label>]")
    ops.resolve_version(version)


# -- local -------------------------------------------------------------------------------


def _local_resolve(version: str) -> None:
    from sampleapp.versions import UnknownVersion, resolve

    try:
        resolve(version)
    except UnknownVersion as exc:
        raise BadInput(str(exc)) from None


def _free_port_block(size: int = 3, attempts: int = 200) -> int:
    """A base port with `size` free ports after it (front door, primary, clone)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 40000, 10)
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
        "stateDir": str(env.state_root / stack),
        "basePort": str(_free_port_block()),
    }


def _local_in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    from infra.local.frontdoor_server import ADMIN_PATH, ADMIN_TOKEN_HEADER

    try:
        response = httpx.get(
            f"{outputs['public_url']}{ADMIN_PATH}",
            headers={ADMIN_TOKEN_HEADER: outputs["front_door_admin_token"]},
            timeout=5,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise GateFailed(f"drain check: the front door does not answer ({exc})") from None
    state = response.json()
    if state["active"] == origin:
        return 1_000_000  # still the active origin: it will never drain
    return int(state["inflight"].get(origin, 0))


def _local_archive_clone(
    env: Environment, stack: str, config: Mapping[str, str], outputs: Mapping[str, Any]
) -> LostWrites:
    from zdd.archive import archive_clone

    name = f"clone-{config.get('deploymentId') or int(time.time())}"
    return archive_clone(
        Path(config["stateDir"]) / outputs["clone_database"],
        env.state_root / "archive" / stack,
        name,
        keep=int(config.get("archiveRetention", "5")),
    )


LOCAL = TargetOps(
    "local",
    _local_resolve,
    _local_initial_config,
    _local_in_flight,
    archive_clone=_local_archive_clone,
)


def ops_for(name: str) -> TargetOps:
    if name == "local":
        return LOCAL
    if name == "azure":
        from zdd.azure import AZURE

        return AZURE
    raise BadInput(f"target {name!r} is not one of: {', '.join(TARGET_NAMES)}")
