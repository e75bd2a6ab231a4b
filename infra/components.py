"""The three concepts every target builds, with typed args shared by all targets.

A target provides one ComponentResource per concept (database, site, front door) taking
these args; `infra.program` assembles a phase from them without knowing the cloud.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pulumi

from zdd.phases import AppSpec, Instance


class DatabaseLike(Protocol):
    """What a site needs of its database."""

    # What the site connects with (a file path locally, a connection string on Azure).
    connection: pulumi.Output[str]
    # The database's name in the target (for reports and tests).
    database_name: pulumi.Output[str]


class SiteLike(Protocol):
    url: pulumi.Output[str]


@dataclass(frozen=True)
class DatabaseArgs:
    role: Instance
    # The primary carries migrations to this version; a clone carries none.
    schema_version: str | None = None
    generation: int = 1
    # Recorded before the first change to the primary database (DESIGN rule 3).
    restore_point: str | None = None
    # A clone's database is a copy of this one.
    copy_of: DatabaseLike | None = None
    # A primary database generation above 1 is restored from this restore point.
    restored_from: str | None = None
    # A read-write clone's database keeps a baseline of the copy (what the clone started from).
    keep_baseline: bool = False


@dataclass(frozen=True)
class SiteArgs:
    spec: AppSpec
    database: DatabaseLike


@dataclass(frozen=True)
class FrontDoorArgs:
    origins: dict[Instance, SiteLike]
    # The origin that takes public traffic; exactly one at a time.
    traffic: Instance
