"""Pulumi dynamic providers for a local stack on PostgreSQL: its cluster (a supervised server
process like every other of the stack), its databases, and their restore points.

The roles' passwords are generated when the cluster is created and kept in its state as
secrets (`additional_secret_outputs`), as the Azure target keeps its clone's password.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from infra.local import haproxy
from infra.local.providers import Props, _ProcessProvider, _RestorePointProvider, _whole
from infra.replacing import changed
from zdd import postgres, processes
from zdd.sqlite_files import archives_beyond, baseline_path, copy_files, files_folder

# A server that was killed replays its write-ahead log before it takes logins again.
SERVER_READY_SECONDS = 120.0
# The role passwords the cluster's state keeps encrypted.
SECRET_OUTPUTS = ("admin_password", "site_password", "reader_password")


def _server(props: Props) -> postgres.Server:
    return postgres.server_from_outputs(props["server"])


class PostgresClusterProvider(_ProcessProvider):
    """One PostgreSQL cluster per stack: `initdb` into the stack's folder at create, the server
    run supervised under the stack's owner id (it comes back if it dies), found and stopped
    through its own pid file, which lies in the stack's folder."""

    _UPDATE_ON = ("port", "bin_dir")  # a restart of the server
    _REPLACE_ON: tuple[str, ...] = ("data_dir",)

    def _stop(self, props: Props) -> None:
        """The supervisor is asked to stop first (so it starts nothing again); the server then
        gets a fast shutdown, which ends the sites' sessions instead of waiting for them."""
        owner = self._owner(props)
        for pid in processes.find_owned(owner):
            processes.terminate(pid, timeout=0)
        postgres.stop_cluster(Path(props["data_dir"]), Path(props["bin_dir"]))
        processes.stop_owned(owner, timeout=5)
        postgres.stop_cluster(Path(props["data_dir"]), Path(props["bin_dir"]), mode="immediate")

    def _start(self, props: Props, *, standby: bool = False) -> Props:
        """The server on its data folder; `standby`: a clone's copy, which takes no change
        (its roles are the copied ones)."""
        props = _whole(props)
        self._stop(props)
        data, run, binaries = (Path(props[k]) for k in ("data_dir", "socket_dir", "bin_dir"))
        run.mkdir(parents=True, exist_ok=True)
        server = postgres.server_from_outputs(props)
        argv = postgres.server_argv(data, run, binaries, int(props["port"]), read_only=standby)
        try:
            pid = self._launch(props, argv, timeout=60)
            postgres.wait_ready(server, timeout=SERVER_READY_SECONDS, data_dir=data)
            if not standby:
                postgres.ensure_roles(server)
        except BaseException:
            self._stop(props)
            raise
        return {**props, "pid": pid}

    def create(self, props: Props) -> CreateResult:
        props = {
            **props,
            **{key: postgres.generate_password() for key in SECRET_OUTPUTS},
        }
        # Nothing in the state owns a data folder left by a create that did not finish.
        self._stop(props)
        postgres.init_cluster(
            Path(props["data_dir"]),
            Path(props["socket_dir"]),
            Path(props["bin_dir"]),
            props["admin_password"],
        )
        outs = self._start(props)
        return CreateResult(id_=f"postgresql:{outs['port']}", outs=outs)

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        kept = {key: olds[key] for key in SECRET_OUTPUTS}
        return UpdateResult(outs=self._start({**news, **kept}))

    def delete(self, _id: str, props: Props) -> None:
        self._stop(props)
        super().delete(_id, props)
        shutil.rmtree(Path(props["data_dir"]).parent, ignore_errors=True)


class PostgresCloneProvider(PostgresClusterProvider):
    """A clone's database: a cluster of its own, made by a base backup of the stack's while the
    primary keeps writing, on its own port and folder in the stack's; deleted with the clone.
    A read-only clone's runs as a hot standby with no upstream (PostgreSQL refuses every
    write). A read-write clone's (`writable`) is started as a primary of its own, keeps a dump
    of what the copy held (its baseline), and is dumped into `archive_path` when it is deleted:
    deletes come last in an update, after the front door moved the traffic away and the
    clone's process (which depends on it) stopped, so the archive holds every write the clone
    acknowledged.

    The copy is taken once, at create: a server that died is started again on the same copy.
    Its roles and passwords are the stack's cluster's at the copy, kept in `clone_server`."""

    # Not `source`: a new generation of the primary (a rollback with database) must never
    # replace the copy under the live clone.
    _UPDATE_ON = ("port", "bin_dir")
    _REPLACE_ON = ("data_dir", "writable")

    def _discard(self, props: Props) -> None:
        self._stop(props)
        shutil.rmtree(Path(props["data_dir"]).parent, ignore_errors=True)
        shutil.rmtree(Path(props["files"]), ignore_errors=True)

    def create(self, props: Props) -> CreateResult:
        props = _whole(props)
        primary = _server(props)
        # What the copy's server is reached with: its port, the copied roles' passwords.
        copied = {**props["server"], "port": props["port"], "database": props["source"]}
        outs = {**props, **{key: copied[key] for key in SECRET_OUTPUTS}, "clone_server": copied}
        # A copy left by a create that did not finish (nothing in the state owns it).
        self._discard(outs)
        started = time.monotonic()
        writable = bool(props.get("writable"))
        try:
            if props.get("front_door_folder"):
                # Writes wait at the front door from now until the primary serves again.
                haproxy.hold_writes_for_copy(Path(props["front_door_folder"]), timeout=60)
            data, run = Path(props["data_dir"]), Path(props["socket_dir"])
            # A writable copy is reached as the site, which owns the database: the reader's
            # grant is not needed there.
            postgres.base_backup(primary, props["source"], data, run, reader=not writable)
            if writable:
                postgres.make_writable(data)
            outs = self._start(outs, standby=not writable)
            copy_files(Path(props["source_files"]), Path(props["files"]))
            server = postgres.server_from_outputs(copied)
            digest = postgres.site_data_digest(server, props["source"], Path(props["files"]))
            if writable:
                # Before the clone exists, so nothing but the copy is in it: the clone's own
                # writes are what its archive holds beyond this.
                postgres.dump_archive(server, props["source"], _baseline(props))
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                outs["archive_path"] = str(
                    Path(props["archive_dir"])
                    / f"{props['archive_stem']}-{stamp}{postgres.DUMP_SUFFIX}"
                )
        except BaseException:
            self._discard(outs)
            if props.get("ports_dir"):
                processes.release_port(
                    Path(props["ports_dir"]), int(props["port"]), Path(props["log_path"]).parent
                )
            raise
        outs = {**outs, "copy_seconds": round(time.monotonic() - started, 3), "digest": digest}
        return CreateResult(id_=f"postgresql-clone:{props['port']}", outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        found = super().diff(_id, olds, news)
        if (Path(olds["data_dir"]) / "PG_VERSION").is_file() and Path(olds["files"]).is_dir():
            return found
        # The copy is gone: only a new one brings it back.
        return DiffResult(changes=True, replaces=["data_dir"], delete_before_replace=True)

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        kept = {
            key: olds[key] for key in (*SECRET_OUTPUTS, "clone_server", "copy_seconds", "digest")
        }
        kept["archive_path"] = olds.get("archive_path")
        kept["clone_server"] = {**kept["clone_server"], "port": news["port"]}
        return UpdateResult(outs=self._start({**news, **kept}, standby=not news.get("writable")))

    def delete(self, _id: str, props: Props) -> None:
        if props.get("archive_path"):
            self._archive(_whole(props))
        super().delete(_id, props)
        shutil.rmtree(Path(props["files"]), ignore_errors=True)

    def _archive(self, props: Props) -> None:
        """The read-write clone's database as a dump in the archive folder, its baseline
        beside it (the pair `zdd.archive` compares), and only the newest `archive_keep`
        archives there. A server that died is started again first: its writes are in its
        data folder; a copy whose folder is gone has nothing left to archive."""
        if not (Path(props["data_dir"]) / "PG_VERSION").is_file():
            return
        if not self._alive(props):
            self._start(props)
        archive = Path(props["archive_path"])
        server = postgres.server_from_outputs(props["clone_server"])
        postgres.dump_archive(server, props["source"], archive)
        shutil.copy(_baseline(props), baseline_path(archive))
        for old in archives_beyond(archive.parent, archive.suffix, int(props["archive_keep"])):
            old.unlink(missing_ok=True)
            baseline_path(old).unlink(missing_ok=True)


def _baseline(props: Props) -> Path:
    """A read-write clone's baseline: in its cluster's folder, so it goes with the copy."""
    return Path(props["data_dir"]).parent / f"baseline{postgres.DUMP_SUFFIX}"


class PostgresDatabaseProvider(ResourceProvider):
    """A database of the stack's cluster and the site's files folder beside it; with
    `restore_from`, what a restore point holds of its database restored into it. (A clone's
    copy is a cluster of its own: `PostgresCloneProvider`.)"""

    _REPLACE_ON = ("name", "read_only", "restore_from")

    def create(self, props: Props) -> CreateResult:
        server, name, files = _server(props), props["name"], Path(props["files"])
        if props.get("restore_from"):
            point = Path(props["restore_from"])
            postgres.restore_database(server, point, name)
            copy_files(files_folder(point), files)
        else:
            # A primary database is never emptied by a create (its state may have been lost).
            if not postgres.database_exists(server, name):
                postgres.create_database(server, name)
            files.mkdir(parents=True, exist_ok=True)
        return CreateResult(id_=name, outs={**props, "copy_seconds": 0.0, "digest": None})

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        replaces = changed(olds, news, self._REPLACE_ON)
        try:
            missing = not postgres.database_exists(_server(news), olds["name"])
        except (postgres.DatabaseError, KeyError):
            # The server is down: its own resource brings it back; nothing is known here.
            missing = False
        missing = missing or not Path(olds["files"]).is_dir()
        return DiffResult(
            changes=bool(replaces) or missing or olds.get("server") != news.get("server"),
            replaces=replaces or (["name"] if missing else []),
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        # Only the server's description changed (its passwords after a new cluster).
        kept = {key: olds.get(key) for key in ("copy_seconds", "digest")}
        return UpdateResult(outs={**news, **kept})

    def delete(self, _id: str, props: Props) -> None:
        postgres.drop_database(_server(props), props["name"])
        shutil.rmtree(Path(props["files"]), ignore_errors=True)


class PostgresRestorePointProvider(_RestorePointProvider):
    """The PostgreSQL primary's restore point: a base backup of the stack's cluster (one
    moment), read-only on disk."""

    def _take(self, props: Props, backup: Path) -> str:
        return postgres.restore_point(
            _server(props), props["database"], backup, Path(props["files"])
        )

    def delete(self, _id: str, props: Props) -> None:
        postgres.remove_restore_point(Path(props["backup_path"]))
