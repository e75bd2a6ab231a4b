"""Assemble one phase from a target's components: the same code for every target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.components import (
    CutoverArgs,
    DatabaseArgs,
    DatabaseLike,
    FrontDoorArgs,
    SiteArgs,
    SiteLike,
)
from zdd.phases import DatabaseMode, Declaration, Instance, Phase


@dataclass(frozen=True)
class Target:
    """A target's three component constructors, each `(name, args, opts) -> component`."""

    name: str
    database: Callable[[str, DatabaseArgs, pulumi.ResourceOptions | None], DatabaseLike]
    site: Callable[[str, SiteArgs, pulumi.ResourceOptions | None], SiteLike]
    front_door: Callable[[str, FrontDoorArgs, pulumi.ResourceOptions | None], Any]
    # The engine makes a rehearsal's copy (`zdd:rehearse`): a cloud target. The local target
    # rehearses without the engine (`zdd.rehearsal`).
    rehearses: bool = False
    # A target whose program switches to the clone itself and waits for the primary's drain
    # (`zdd.registry.TargetEntry.switches_in_program`): `(name, args, opts) -> resource`.
    cutover: (
        Callable[[str, CutoverArgs, pulumi.ResourceOptions | None], pulumi.CustomResource] | None
    ) = None


@dataclass
class Built:
    primary_database: DatabaseLike
    primary: SiteLike
    clone_database: DatabaseLike | None
    clone: SiteLike | None
    front_door: Any


def build(
    declaration: Declaration, target: Target, opts: pulumi.ResourceOptions | None = None
) -> Built:
    """Declare the resources of `declaration.phase`. Names are stable across phases, so the
    primary's resources are updated in place and never replaced by a phase change. `opts`
    applies to every component (the phase guard)."""
    if declaration.rehearsal_version is not None and not target.rehearses:
        raise pulumi.RunError(
            f"zdd:rehearse: target {target.name} rehearses without the engine (`zdd "
            "rehearse`); remove the key"
        )
    cutover = None
    if declaration.cutover_writes is not None and target.cutover is not None:
        # First: in an update out of `clone`, the primary changes only once the clone holds
        # the traffic and the primary drained; a later phase keeps the switch as it was made.
        cutover = target.cutover(
            "front-door",
            CutoverArgs(declaration.cutover_writes, declaration.hold_writes_seconds),
            opts,
        )
    primary_database = target.database(
        "primary-db",
        DatabaseArgs(
            role=Instance.PRIMARY,
            schema_version=declaration.primary_database_version,
            generation=declaration.primary_database_generation,
            restore_point=declaration.restore_point,
            restored_from=declaration.restored_from,
            after=cutover,
        ),
        opts,
    )
    primary = target.site("primary", SiteArgs(declaration.primary, primary_database), opts)
    origins: dict[Instance, SiteLike] = {Instance.PRIMARY: primary}
    clone_database = clone = None
    if declaration.rehearsal_version is not None and declaration.clone is not None:
        # Outside the front door: the operator's gates reach the clone by its own address.
        clone_database = target.database(
            "clone-db",
            DatabaseArgs(
                role=Instance.CLONE,
                schema_version=declaration.rehearsal_version,
                copy_of=primary_database,
                rehearsal=True,
            ),
            opts,
        )
        clone = target.site("clone", SiteArgs(declaration.clone, clone_database), opts)
    elif declaration.clone is not None and declaration.clone.database is Instance.PRIMARY:
        # The compatible strategy: a second instance of the site on the primary database.
        shared = declaration.shared_database_generation
        if shared is not None and shared != declaration.primary_database_generation:
            # Restored meanwhile: the clone stays on the generation it serves (never restarts).
            clone_database = target.database(
                "shared-db",
                DatabaseArgs(role=Instance.PRIMARY, generation=shared, existing=True),
                opts,
            )
        clone = target.site(
            "clone", SiteArgs(declaration.clone, clone_database or primary_database), opts
        )
        origins[Instance.CLONE] = clone
    elif declaration.clone is not None:
        clone_database = target.database(
            "clone-db",
            DatabaseArgs(
                role=Instance.CLONE,
                copy_of=primary_database,
                # A clone that takes writes keeps its starting point, to report what it was given.
                keep_baseline=declaration.clone.database_mode is DatabaseMode.READ_WRITE,
                read_only=declaration.clone.database_mode is DatabaseMode.READ_ONLY,
                hold_writes_for_copy=declaration.clone.database_mode is DatabaseMode.READ_ONLY,
            ),
            opts,
        )
        clone = target.site("clone", SiteArgs(declaration.clone, clone_database), opts)
        origins[Instance.CLONE] = clone
    read_only_clone = (
        declaration.clone is not None and declaration.clone.database_mode is DatabaseMode.READ_ONLY
    )
    front_door = target.front_door(
        "front-door",
        FrontDoorArgs(
            origins=origins,
            traffic=declaration.traffic,
            writes=declaration.edge_writes,
            hold_seconds=declaration.hold_writes_seconds,
            # An edge that can neither hold a write nor switch at once (Front Door, whose changes
            # take minutes to reach every edge) refuses writes from the switch to the clone
            # until the clone is gone: some edges still send visitors to it while `return` or
            # `withdraw` propagates.
            refuse_writes=read_only_clone
            and declaration.phase in (Phase.CUTOVER, Phase.DEPLOY, Phase.RETURN, Phase.WITHDRAW),
            cutover=cutover,
        ),
        opts,
    )
    return Built(primary_database, primary, clone_database, clone, front_door)
