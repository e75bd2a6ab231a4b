"""The local target's operations for the driver: releases, ports, drain and read-only checks."""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.local.haproxy import AdminSocket, FrontDoorError

# `zdd.postgres` is imported by the functions that need it: psycopg's import would cost every
# `zdd` command, on SQLite stacks too, a tenth of a second.
from zdd import appspec, processes
from zdd.archive import (
    LostWrites,
    clone_writes,
    clone_writes_on_server,
    writes_since,
    writes_since_on_server,
)
from zdd.environment import Environment, log_file, ports_dir
from zdd.errors import BadInput, GateFailed
from zdd.phases import PORTS_PER_STACK, SERVED_BY_HEADER, Mode, RestorePointTaken
from zdd.registry import LOCAL_TARGET
from zdd.rehearsal import Copier, RehearsalPlan
from zdd.sqlite_files import data_digest, proof_problem, restore_point_file_name
from zdd.targets import LogLocation, RehearsalRequest, TargetOps, app_spec
from zdd.targets.local_rehearsal import PostgresCopy, SqliteCopy, scratch_data_dir


def _resolve(version: str, config: Mapping[str, str]) -> None:
    """A version is deployable when its release folder exists."""
    from zdd import postgres

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
    if spec.engine is appspec.DatabaseEngine.POSTGRESQL:
        postgres.require_bin_dir()


def _free_port_block(registry: Path, size: int = PORTS_PER_STACK, attempts: int = 200) -> int:
    """A base port with `size` free ports after it (front door, primary, clone, database
    server, the clone's database server), none of them held by another stack in the port
    registry (whose processes may be down just now)."""
    bases = processes.server_ports(step=10)
    for _ in range(attempts):
        base = random.choice(bases)
        ports = range(base, base + size)
        if any((registry / str(port)).exists() or processes.port_in_use(port) for port in ports):
            continue
        return base
    raise BadInput("found no block of free local ports; set zdd:basePort yourself")


def _initial_config(env: Environment, stack: str) -> dict[str, str]:
    return {
        "stateDir": str(env.stack_dir(stack)),
        "basePort": str(_free_port_block(ports_dir(env.state_root))),
    }


def _in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    """The origin's sessions and queue in HAProxy's own counters; a server still taking new
    requests never drains."""
    try:
        server = AdminSocket(outputs["front_door_socket"]).servers()[origin]
    except FrontDoorError as exc:
        raise GateFailed(f"drain check: the front door does not answer ({exc})") from None
    return server.in_flight if not server.takes_traffic else 1_000_000


def _read_only_violation(env: Environment, stack: str, outputs: Mapping[str, Any]) -> str | None:
    copied = outputs.get("clone_database_digest")
    if outputs.get("mode") != Mode.READ_ONLY or not copied:
        return None
    server = outputs.get("clone_database_server")
    if server:
        return _server_read_only_violation(
            env, stack, str(outputs["clone_database"]), server, copied
        )
    database = env.stack_dir(stack) / str(outputs.get("clone_database"))
    if not database.exists():
        return None
    now = data_digest(database)
    if now == copied:
        return None
    return (
        f"read-only violation: the read-only clone's database {database.name} or its files "
        f"changed after they were copied (digest {copied[:12]} then, {now[:12]} now): the site "
        "wrote to them in ReadOnly mode"
    )


def _server_read_only_violation(
    env: Environment, stack: str, name: str, outputs: Mapping[str, Any], copied: str
) -> str | None:
    """As for a SQLite copy, with the digest the clone's own server computes of its database
    (named as its source there); `name` names the clone's files folder."""
    from zdd import postgres

    server = postgres.server_from_outputs(outputs)
    inside = str(outputs["database"])
    try:
        if not postgres.database_exists(server, inside):
            return None
        files = postgres.files_of(env.stack_dir(stack), name)
        now = postgres.site_data_digest(server, inside, files)
    except (postgres.DatabaseError, postgres.PostgresFailed):
        return None
    if now == copied:
        return None
    return (
        f"read-only violation: the read-only clone's database {name} or its files changed "
        f"after they were copied (digest {copied[:12]} then, {now[:12]} now): the site wrote "
        "to them in ReadOnly mode"
    )


def _forget(env: Environment, stack: str) -> None:
    """Only the stack's own folder (logs, retired database generations), derived from its name,
    never one its config names; archives and other stacks' folders stay. Only processes whose
    owner id names that folder are stopped."""
    from zdd import postgres

    folder = env.stack_dir(stack)
    for pid in processes.find_owned_under(folder):
        processes.terminate(pid, timeout=5)
    # A database server runs as its own OS user, out of reach of the owner ids: it is found by
    # the pid file in its data folder, inside the stack's folder.
    # A rehearsal's scratch cluster, and a rollback's scratch copy of a restore point, too:
    # one that was killed left its server running.
    for data in (
        postgres.data_dir(folder),
        postgres.clone_data_dir(folder),
        scratch_data_dir(folder),
        postgres.restore_scratch_dir(folder) / "data",
    ):
        postgres.stop_cluster(data, postgres.bin_dir(), mode="immediate")
    shutil.rmtree(folder, ignore_errors=True)


def _restore_point_problem(env: Environment, stack: str, taken: RestorePointTaken) -> str | None:
    """A SQLite restore point is proven by its file's bytes and its files; a PostgreSQL one (a
    stack with a cluster keeps its engine) by its backup's manifest, WAL and files, and by
    pg_verifybackup reading each file of the backup against the manifest."""
    from zdd import postgres

    folder = env.stack_dir(stack)
    if postgres.data_dir(folder).is_dir():
        return postgres.restore_point_problem(
            folder / postgres.restore_point_folder_name(taken.id),
            taken.digest,
            postgres.require_bin_dir(),
        )
    path = folder / restore_point_file_name(taken.id)
    return proof_problem(path, "file", path.is_file(), data_digest, taken.digest)


def _writes_after_restore(
    env: Environment, stack: str, outputs: Mapping[str, Any]
) -> LostWrites | None:
    """The compatible clone's database (an earlier primary generation) against the restore
    point the primary was restored from; None when the clone served the primary itself."""
    taken = RestorePointTaken.from_record(outputs.get("restore_point"))
    served = outputs.get("clone_database")
    if taken is None or not served or served == outputs.get("primary_database"):
        return None
    folder = env.stack_dir(stack)
    server = outputs.get("database_server")
    if server:
        # A generation of the stack's cluster, against what the restore point holds of it.
        from zdd import postgres

        point = folder / postgres.restore_point_folder_name(taken.id)
        return writes_since_on_server(postgres.server_from_outputs(server), point, str(served))
    return writes_since(folder / restore_point_file_name(taken.id), folder / str(served))


def _clone_writes(
    _env: Environment, _stack: str, outputs: Mapping[str, Any], archive: Path
) -> LostWrites:
    """A read-write clone's archive against its baseline: SQLite files, or PostgreSQL dumps
    compared in the stack's cluster."""
    from zdd import postgres

    server = outputs.get("database_server")
    if archive.suffix == postgres.DUMP_SUFFIX and server:
        return clone_writes_on_server(postgres.server_from_outputs(server), archive)
    return clone_writes(archive)


def _rehearsal(request: RehearsalRequest) -> RehearsalPlan:
    """A rehearsal on a copy of the primary's data, in the stack's own folder: its SQLite
    file, or its database of the stack's PostgreSQL cluster."""
    config, outputs, stack = request.config, request.outputs, request.stack
    spec = app_spec(config)
    database = outputs.get("primary_database")
    server = outputs.get("database_server")
    engine = appspec.DatabaseEngine
    if not database or (spec.engine is engine.POSTGRESQL and not server):
        raise BadInput(f"stack {stack!r} has no primary database yet; run `zdd resume`")
    folder = request.env.stack_dir(stack)
    copier: Copier = SqliteCopy(folder / str(database))
    if spec.engine is engine.POSTGRESQL:
        from zdd import postgres

        files = postgres.files_of(folder, str(database))
        copier = PostgresCopy(dict(server or {}), str(database), files)
    return RehearsalPlan(
        stack=stack,
        stack_dir=folder,
        copier=copier,
        spec=spec,
        from_version=config["currentVersion"],
        version=request.version,
    )


def _log_of(env: Environment, stack: str, config: Mapping[str, str], component: str) -> LogLocation:
    if (
        component in ("postgresql", "postgresql-clone")
        and app_spec(config).engine is not appspec.DatabaseEngine.POSTGRESQL
    ):
        raise BadInput(
            f"stack {stack!r} keeps its site's database in SQLite files: it runs no database "
            f"server, so there is no {component} log (its site's own logs: primary, clone)"
        )
    path = log_file(env.stack_dir(stack), component)
    return LogLocation(component, path, str(path))


LOCAL = TargetOps(
    LOCAL_TARGET,
    _resolve,
    _initial_config,
    _in_flight,
    clone_writes=_clone_writes,
    read_only_violation=_read_only_violation,
    restore_point_problem=_restore_point_problem,
    served_by_header=SERVED_BY_HEADER,
    forget=_forget,
    rehearsal=_rehearsal,
    writes_after_restore=_writes_after_restore,
    log_of=_log_of,
)
