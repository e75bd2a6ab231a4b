"""The local target's checks: its dynamic resources (the site processes, the front door, the
primary and clone database files) as `infra/local/components.py` declares them.

Each check returns no violation for a resource that is not the local target's; `CHECKS` names
the policy each one enforces, and `policies.rules` gathers them with the other targets'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath

from policies.model import Resource, StackConfig, TargetChecks, Violation, clone_mode_problems
from zdd import postgres
from zdd.phases import DatabaseMode
from zdd.sqlite_files import restore_point_file_name

# The local target's resources (dynamic resources; see infra/local/components.py and, for a
# stack on PostgreSQL, infra/local/postgres_components.py).
PRIMARY_DB_FILE = "primary-db-file"
CLONE_DB_FILE = "clone-db-file"
PRIMARY_DB_SERVER = "primary-db-database"
# A clone's database on PostgreSQL is a cluster of its own, a copy of the stack's.
CLONE_DB_SERVER = "clone-db-cluster"

_PRIMARY_FILE_RE = re.compile(r"^primary-g(\d+)\.sqlite$")
_PRIMARY_DATABASE_RE = re.compile(r"^primary_g(\d+)$")


def _is_local_site(resource: Resource) -> bool:
    return (
        resource.is_dynamic and "instance" in resource.props and "database_mode" in resource.props
    )


def _is_local_front_door(resource: Resource) -> bool:
    return resource.is_dynamic and "active" in resource.props and "origins" in resource.props


# -- the clone runs ReadOnly unless the stack acknowledges data loss ---------------------------


def check_clone_read_only(resource: Resource, config: StackConfig) -> list[str]:
    """The clone process's `database_mode`, and on PostgreSQL whether the clone's own cluster
    takes writes: a writable copy loses what it takes as surely as a ReadWrite site."""
    if resource.is_dynamic and resource.name == CLONE_DB_SERVER:
        mode = DatabaseMode.READ_WRITE if resource.prop("writable") else DatabaseMode.READ_ONLY
        return clone_mode_problems(resource, {"its cluster": mode}, config)
    if not _is_local_site(resource) or resource.prop("instance") != "clone":
        return []
    return clone_mode_problems(resource, {"database_mode": resource.prop("database_mode")}, config)


# -- the primary database is protected, never deleted or replaced outside a rollback -----------


def check_primary_database_protected(resource: Resource, config: StackConfig) -> list[str]:
    """What replaces the file (a new `path` or `source`) can only change with a new database
    generation, and a new generation only comes from the recorded restore point."""
    if resource.is_dynamic and resource.name == PRIMARY_DB_SERVER:
        return _primary_server_database_problems(resource, config)
    if not (resource.is_dynamic and resource.name == PRIMARY_DB_FILE):
        return []
    path = PurePath(str(resource.prop("path", "")))
    match = _PRIMARY_FILE_RE.match(path.name)
    if match is None:
        return [f"{resource.name}: {path} is not a primary database generation file"]
    problems = []
    generation = int(match.group(1))
    wanted = config.generation
    if wanted is not None and generation != wanted:
        problems.append(
            f"{resource.name}: {path.name} is generation {generation}, the stack's primary "
            f"database is generation {wanted} (zdd:databaseGeneration): that would replace it"
        )
    if config.state_dir is not None and path.parent != config.state_dir:
        problems.append(
            f"{resource.name}: {path} is outside zdd:stateDir {config.state_dir}: that would "
            "replace the primary database with a new one"
        )
    if resource.prop("keep_baseline"):
        problems.append(
            f"{resource.name}: keep_baseline is for a ReadWrite clone's copy; on the primary "
            "database it would replace it"
        )
    source = resource.prop("source")
    if generation == 1 and source:
        problems.append(
            f"{resource.name}: generation 1 is the original database; it is never made from "
            f"another one ({source})"
        )
    if generation > 1:
        restored_from = config.get("restoredFrom")
        if not source:
            problems.append(
                f"{resource.name}: generation {generation} has no source: a new generation of "
                "the primary database is only made by a rollback with database, from its "
                "restore point"
            )
        elif restored_from is not None and PurePath(str(source)).name != restore_point_file_name(
            restored_from
        ):
            problems.append(
                f"{resource.name}: generation {generation} comes from {source}, not from the "
                f"restore point zdd:restoredFrom {restored_from}"
            )
        elif config.known and restored_from is None:
            problems.append(
                f"{resource.name}: generation {generation} needs zdd:restoredFrom, the restore "
                "point of the rollback with database that made it"
            )
    return problems


def _primary_server_database_problems(resource: Resource, config: StackConfig) -> list[str]:
    """As for a file: a database of the stack's cluster is of the current generation, never a
    copy, and a generation above 1 comes from the restore point of its rollback."""
    name = str(resource.prop("name", ""))
    match = _PRIMARY_DATABASE_RE.match(name)
    if match is None:
        return [f"{resource.name}: {name} is not a primary database generation"]
    problems = []
    generation, wanted = int(match.group(1)), config.generation
    if wanted is not None and generation != wanted:
        problems.append(
            f"{resource.name}: {name} is generation {generation}, the stack's primary database "
            f"is generation {wanted} (zdd:databaseGeneration): that would replace it"
        )
    if resource.prop("source"):
        problems.append(f"{resource.name}: the primary database is never a copy of another one")
    restore_from = resource.prop("restore_from")
    restored_from = config.get("restoredFrom")
    if generation == 1 and restore_from:
        problems.append(f"{resource.name}: generation 1 is the original database, never restored")
    if generation > 1 and (
        not restore_from
        or restored_from is None
        or PurePath(str(restore_from)).name != postgres.restore_point_folder_name(restored_from)
    ):
        problems.append(
            f"{resource.name}: generation {generation} is only made from the restore point "
            f"zdd:restoredFrom of a rollback with database, not from {restore_from}"
        )
    return problems


def _primary_generation(resource: Resource) -> int | None:
    """The generation a primary database resource (a file or a server's database) holds."""
    if resource.name == PRIMARY_DB_SERVER:
        match = _PRIMARY_DATABASE_RE.match(str(resource.prop("name", "")))
    else:
        match = _PRIMARY_FILE_RE.match(PurePath(str(resource.prop("path", ""))).name)
    return int(match.group(1)) if match else None


def check_primary_database_present(
    resources: Sequence[Resource], config: StackConfig
) -> list[Violation]:
    """A stack with a local site has exactly one primary database file, of the current
    generation."""
    if not any(_is_local_site(r) for r in resources):
        return []
    problems: list[Violation] = []
    wanted = config.generation
    files = [
        r for r in resources if r.is_dynamic and r.name in (PRIMARY_DB_FILE, PRIMARY_DB_SERVER)
    ]
    if len(files) != 1:
        problems.append(
            Violation(f"the stack has {len(files)} primary database files, it needs one")
        )
    for file in files:
        generation = _primary_generation(file)
        if generation is None or (wanted is not None and generation != wanted):
            name = file.prop("path") or file.prop("name")
            problems.append(
                Violation(
                    f"{file.name}: {name} is not generation {wanted} of the primary database",
                    file.urn,
                )
            )
    return problems


# -- exactly one origin takes public traffic at a time -----------------------------------------


def check_front_door_active_origin(resource: Resource, _config: StackConfig) -> list[str]:
    """The front door's `active` origin is one of its `origins`, and the primary is always
    among them."""
    if not _is_local_front_door(resource):
        return []
    origins = resource.prop("origins", {})
    active = resource.prop("active")
    if not isinstance(origins, Mapping) or not origins:
        return [f"{resource.name}: the front door has no origins"]
    problems = []
    if active not in origins:
        problems.append(
            f"{resource.name}: active origin {active!r} is not one of its origins "
            f"({', '.join(sorted(origins))})"
        )
    if "primary" not in origins:
        problems.append(f"{resource.name}: the primary is not an origin of the front door")
    return problems


def check_one_public_origin(resources: Sequence[Resource], _config: StackConfig) -> list[Violation]:
    """One front door (`front-door-active-origin` checks its active origin)."""
    doors = [r for r in resources if _is_local_front_door(r)]
    if any(_is_local_site(r) for r in resources) and len(doors) != 1:
        return [Violation(f"the stack has {len(doors)} front doors, it needs exactly one")]
    return []


# -- the clone's database is a copy of the primary's -------------------------------------------


def check_clone_database_is_copy(resource: Resource, config: StackConfig) -> list[str]:
    if resource.is_dynamic and resource.name == CLONE_DB_SERVER:
        source = str(resource.prop("source") or "")
        wanted = config.generation
        problems = []
        if source != postgres.database_name("primary", wanted or 1):
            problems.append(f"{resource.name}: copies {source!r}, not the current primary database")
        # The copy is made into this folder, emptied first: never the stack's own cluster.
        data = PurePath(str(resource.prop("data_dir", "")))
        if data.parent.name != postgres.CLONE_CLUSTER or (
            config.state_dir is not None and data.parent.parent != config.state_dir
        ):
            problems.append(
                f"{resource.name}: copies into {data}, not the clone's cluster folder "
                f"{postgres.CLONE_CLUSTER}/data of zdd:stateDir"
            )
        return problems
    if not (resource.is_dynamic and resource.name == CLONE_DB_FILE):
        return []
    source = resource.prop("source")
    if not source:
        return [f"{resource.name}: the clone's database has no source: it must copy the primary's"]
    source_path = PurePath(str(source))
    match = _PRIMARY_FILE_RE.match(source_path.name)
    if match is None:
        return [f"{resource.name}: copies {source}, which is not the primary database"]
    problems = []
    wanted = config.generation
    if wanted is not None and int(match.group(1)) != wanted:
        problems.append(
            f"{resource.name}: copies generation {match.group(1)} of the primary database, the "
            f"current one is generation {wanted}"
        )
    if config.state_dir is not None and source_path.parent != config.state_dir:
        problems.append(f"{resource.name}: copies {source}, outside zdd:stateDir")
    if PurePath(str(resource.prop("path", ""))) == source_path:
        problems.append(f"{resource.name}: the copy would overwrite the primary database")
    return problems


CHECKS = TargetChecks(
    name="local",
    resource={
        "clone-read-only": check_clone_read_only,
        "primary-database-protected": check_primary_database_protected,
        "front-door-active-origin": check_front_door_active_origin,
        "clone-database-is-copy": check_clone_database_is_copy,
    },
    stack={
        "primary-database-present": check_primary_database_present,
        "one-public-origin": check_one_public_origin,
    },
)
