"""The three concepts every target builds, with typed args shared by all targets.

A target provides one ComponentResource per concept (database, site, front door) taking
these args; `infra.program` assembles a phase from them without knowing the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pulumi

from zdd.phases import DEFAULT_HOLD_WRITES_SECONDS, EdgeWrites, Instance, SiteDeclaration


class DatabaseLike(Protocol):
    """What a site needs of its database."""

    # What the site connects with (a file path locally, a connection string on Azure).
    connection: pulumi.Output[str]
    # The database's name in the target (for reports and tests).
    database_name: pulumi.Output[str]
    # What the restore point resource recorded when it was taken ({"restore_point", "taken_at",
    # "digest"}), None without one: the only proof a recovery may restore from.
    restore_point_taken: pulumi.Output[dict[str, Any]] | None
    # Where a read-write clone's database is kept when it is destroyed (None: not kept).
    archive: pulumi.Output[str] | None
    # A copy's content digest when it was taken (None: not a copy, or the target cannot tell).
    copy_digest: pulumi.Output[str] | None


class SiteLike(Protocol):
    url: pulumi.Output[str]


@dataclass(frozen=True)
class DatabaseArgs:
    role: Instance
    # The primary carries migrations to this version; a clone carries none.
    schema_version: str | None = None
    generation: int = 1
    # Recorded before the first change to the primary database (rule 3 of docs/design.md).
    restore_point: str | None = None
    # A clone's database is a copy of this one.
    copy_of: DatabaseLike | None = None
    # A primary database generation above 1 is restored from this restore point.
    restored_from: str | None = None
    # An earlier generation of the primary database that a compatible clone still serves
    # after a rollback with database: only pointed at, never created, changed or deleted.
    existing: bool = False
    # A rehearsal: the clone's copy is migrated to `schema_version` (the release rehearsed),
    # so the current release can be tried on it before anything visible changes.
    rehearsal: bool = False
    # A read-write clone's database keeps a baseline of the copy (what the clone started from).
    keep_baseline: bool = False
    # A read-only clone's database refuses writes in the database itself (rule 9).
    read_only: bool = False
    # The copy waits until the front door holds new writes and those in flight are answered,
    # so it holds every write acknowledged before the clone takes the traffic (rule 11).
    hold_writes_for_copy: bool = False
    # The program's own switch to the clone (`CutoverArgs`): the primary database's restore
    # point, so every change of the primary, waits until it is made and the primary drained.
    after: pulumi.Resource | None = None


@dataclass(frozen=True)
class SiteArgs:
    spec: SiteDeclaration
    database: DatabaseLike


@dataclass(frozen=True)
class FrontDoorArgs:
    origins: dict[Instance, SiteLike]
    # The origin that takes public traffic; exactly one at a time.
    traffic: Instance
    # What an edge that switches at once and can hold requests does with a write (rule 11).
    writes: EdgeWrites = EdgeWrites.PASS
    hold_seconds: float = DEFAULT_HOLD_WRITES_SECONDS
    # For an edge that can neither hold a write nor switch at once (a global CDN): writes are
    # refused while a read-only clone may serve (rule 9 of docs/design.md).
    refuse_writes: bool = False
    # The program's own switch to the clone, made earlier in the update: the front door's own
    # change comes after it (in `return`, the switch back).
    cutover: pulumi.CustomResource | None = None


@dataclass(frozen=True)
class CutoverArgs:
    """A front door's switch to the clone, made by the program on a target that can wait for
    the primary's drain inside an update: every change of the primary waits for it."""

    # What the front door does with writes from the switch on, until the primary serves again.
    writes: EdgeWrites
    hold_seconds: float
