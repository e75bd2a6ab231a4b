"""Pulumi dynamic providers for the local target.

Each provider is a real Pulumi resource provider run by the engine: `create`, `diff`,
`update` and `delete` do the work, the state records what exists (pids, files), and a re-run
with the same inputs changes nothing unless something died, in which case `diff` reports it
and the update brings it back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ResourceProvider,
    UpdateResult,
)

from infra.local import haproxy
from infra.replacing import changed, replaced_when_changed
from zdd import processes
from zdd.phases import DEFAULT_HOLD_WRITES_SECONDS, EdgeWrites, Instance
from zdd.sqlite_files import (
    archive_database,
    baseline_path,
    copy_site_data,
    data_digest,
    files_folder,
    make_read_only,
    online_backup,
    remove_database,
    remove_site_data,
)

Props = dict[str, Any]

# How long a server of this stack that was just stopped may take to give its port back.
PORT_RELEASE_SECONDS = 3.0


def _whole(props: Props) -> Props:
    """Numbers come back from the engine as floats; ports and generations are whole."""
    return {
        k: int(v) if k in ("port", "generation", "pid") and v is not None else v
        for k, v in props.items()
    }


class SqliteDatabaseProvider(ResourceProvider):
    """A SQLite file and the site's files folder beside it; with `source`, a consistent copy of
    another database and its files taken at create (`read_only`: marked read-only in its header,
    so the site cannot write it whatever URL it opens).

    A read-write clone's database (`keep_baseline`) also keeps the copy it started from, and is
    archived when it is deleted: deletes come last in an update, after the front door moved the
    traffic away and the clone's process (which depends on it) stopped, so the archive holds
    every write the clone acknowledged.
    """

    # Not `source`: a copy is taken once, when it is created. A new generation of the primary
    # (a rollback with database) must never replace the database under the live clone.
    _REPLACE_ON = ("path", "keep_baseline", "read_only")

    def create(self, props: Props) -> CreateResult:
        path = Path(props["path"])
        source = props.get("source")
        started = time.monotonic()
        archive = None
        if source:
            if props.get("front_door_folder"):
                # Writes wait at the front door from now until the primary serves again.
                haproxy.hold_writes_for_copy(Path(props["front_door_folder"]), timeout=60)
            copy_site_data(Path(source), path)
            if props.get("read_only"):
                make_read_only(path)
            if props.get("keep_baseline"):
                online_backup(path, baseline_path(path))
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                archive = str(Path(props["archive_dir"]) / f"{path.stem}-{stamp}.sqlite")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).close()
            files_folder(path).mkdir(exist_ok=True)
        outs = {
            **props,
            "size_bytes": path.stat().st_size,
            "copy_seconds": round(time.monotonic() - started, 3) if source else 0.0,
            # What a copy held when it was taken: a read-only clone must still hold exactly that.
            "digest": data_digest(path) if source else None,
            "archive_path": archive,
        }
        return CreateResult(id_=str(path), outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        replaces = changed(olds, news, self._REPLACE_ON)
        path = Path(olds["path"])
        missing = not path.exists() or not files_folder(path).is_dir()
        return DiffResult(
            changes=bool(replaces) or missing,
            replaces=replaces or (["path"] if missing else []),
            delete_before_replace=True,
        )

    def delete(self, _id: str, props: Props) -> None:
        path = Path(props["path"])
        if props.get("archive_path") and path.exists():
            archive_database(path, Path(props["archive_path"]), int(props["archive_keep"]))
        remove_site_data(path)
        remove_database(baseline_path(path))


class _RestorePointProvider(ResourceProvider):
    """A restore point of the primary database and its files, taken before their first change
    (`_take`, the database's own way, into `backup_path`), and its digest as proof."""

    def create(self, props: Props) -> CreateResult:
        backup = Path(props["backup_path"])
        # A digest computed while taking it (as the bytes were written) spares a second read.
        digest = self._take(props, backup) or data_digest(backup)
        outs = {**props, "taken_at": time.time(), "digest": digest}
        return CreateResult(id_=props["restore_point"], outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        # Bound to its id and file: the database it was taken from may get a new generation.
        return replaced_when_changed(olds, news, ("restore_point", "backup_path"))

    def _take(self, props: Props, backup: Path) -> str | None:
        raise NotImplementedError


class RestorePointProvider(_RestorePointProvider):
    """The SQLite primary's restore point: an online backup, marked read-only in its header."""

    def _take(self, props: Props, backup: Path) -> None:
        copy_site_data(Path(props["database_path"]), backup)
        make_read_only(backup)
        return None

    def delete(self, _id: str, props: Props) -> None:
        remove_site_data(Path(props["backup_path"]))


class MigrationProvider(ResourceProvider):
    """Runs the app spec's `migrate` argv of `version`, from its release, on the primary database.

    Keyed by version, database and generation: the same migration is never run twice on one
    database generation (an empty `migrate` records the version and runs nothing).
    """

    _KEYS = ("database_path", "version", "generation")

    def _migrate(self, props: Props) -> Props:
        argv = list(props["argv"])
        database = Path(props["database_path"])
        if argv:
            try:
                # Its own process group, one at a time per database: a migration left by a
                # killed update is stopped before another one may start (SQLite migrations are
                # not transactional).
                result = processes.run_exclusive(
                    argv,
                    processes.owner_id(database.parent, "migration"),
                    database.with_name(f"{database.name}.migrate.lock"),
                    cwd=Path(props["release"]),
                    env=dict(props["env"]),
                )
            except (OSError, processes.ProcessFailed) as exc:
                raise RuntimeError(
                    f"{exc}\napp spec `migrate` of {props['version']} cannot run; fix `migrate` "
                    f"or the release {props['release']}"
                ) from None
            if result.returncode != 0:
                raise RuntimeError(
                    f"{result.stdout.rstrip()}\napp spec `migrate` of {props['version']} failed "
                    f"(exit {result.returncode}); fix the migration or `migrate`"
                )
        return {**_whole(props), "migrated_at": time.time()}

    def create(self, props: Props) -> CreateResult:
        return CreateResult(
            id_=f"{props['database_path']}@{props['version']}", outs=self._migrate(props)
        )

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        return DiffResult(changes=bool(changed(olds, news, self._KEYS)))

    def update(self, _id: str, _olds: Props, news: Props) -> UpdateResult:
        return UpdateResult(outs=self._migrate(news))

    def delete(self, _id: str, props: Props) -> None:
        """Migrations are not undone: a database goes back only through a restore point."""


class _ProcessProvider(ResourceProvider):
    """A long-running process, started detached and found again by its owner id (the stack's
    folder and the resource's log name), never by a pid alone or a command line."""

    # Inputs whose change needs a new process under a new id, and those an update applies to
    # the running one; a process that died is an update too, which starts it again.
    _REPLACE_ON: tuple[str, ...] = ()
    _UPDATE_ON: tuple[str, ...] = ()

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        replaces = changed(olds, news, self._REPLACE_ON)
        updates = changed(olds, news, self._UPDATE_ON)
        return DiffResult(
            changes=bool(replaces or updates) or not self._alive(olds),
            replaces=replaces,
            delete_before_replace=True,
        )

    @staticmethod
    def _owner(props: Props) -> str:
        log = Path(props["log_path"])
        return processes.owner_id(log.parent, log.stem)

    def _alive(self, props: Props) -> bool:
        return processes.is_running(props.get("pid"), self._owner(props))

    def _launch(
        self,
        props: Props,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Start `argv` (stopping any stray of its own first) and wait until it listens."""
        log, port = Path(props["log_path"]), int(props["port"])
        owner = self._owner(props)
        processes.stop_owned(owner)
        if props.get("ports_dir"):
            processes.claim_port(Path(props["ports_dir"]), port, log.parent)
        if processes.port_in_use(port, grace=PORT_RELEASE_SECONDS):
            raise processes.ProcessFailed(
                f"port {port} is taken by a process that is not this stack's {log.stem} "
                "(another stack or program); give this stack other ports (zdd:basePort)"
            )
        process = processes.start_detached(
            argv, log, owner, env=env, cwd=Path(cwd) if cwd else None, supervised=True
        )
        with self._stopped_on_failure(props):
            processes.wait_listening(process, port, log, timeout=timeout)
        return process.pid

    @contextmanager
    def _stopped_on_failure(self, props: Props) -> Iterator[None]:
        """A create that fails leaves no resource in the state, so nothing would ever stop a
        process it had started: it is stopped here, before the failure is reported."""
        try:
            yield
        except BaseException:
            processes.stop_owned(self._owner(props), timeout=5)
            raise

    def delete(self, _id: str, props: Props) -> None:
        # Its children too: a start command may run the server as one (`mlflow server` runs
        # gunicorn), which would otherwise hold the port after the command is gone.
        processes.stop_owned(self._owner(props))
        if props.get("ports_dir"):
            log = Path(props["log_path"])
            processes.release_port(Path(props["ports_dir"]), int(props["port"]), log.parent)


class WebAppProvider(_ProcessProvider):
    """One web app process, started with its app spec's `start` argv from its release folder."""

    # Any change restarts the process in place (its id names instance and port).
    _UPDATE_ON = ("argv", "env", "release", "port")

    def _start(self, props: Props) -> Props:
        props = _whole(props)
        try:
            pid = self._launch(
                props,
                list(props["argv"]),
                env=dict(props["env"]),
                cwd=props["release"],
                timeout=float(props["start_timeout"]),
            )
        except (processes.ProcessFailed, OSError) as exc:
            # The summary comes last: the driver shows the end of long diagnostics.
            raise RuntimeError(
                f"{exc}\napp spec `start` of {props['version']} ({props['instance']}) failed; "
                f"fix `start` or the release {props['release']}"
            ) from None
        return {**props, "pid": pid, "url": f"http://127.0.0.1:{props['port']}"}

    def create(self, props: Props) -> CreateResult:
        outs = self._start(props)
        return CreateResult(id_=f"{outs['instance']}:{outs['port']}", outs=outs)

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        self.delete(_id, olds)
        return UpdateResult(outs=self._start(news))


class VerificationProvider(ResourceProvider):
    """A site proves it is what the phase declared before a front door switches to it: its
    health path answers 2xx, and a site that reports its identity reports this version,
    instance and database mode (rule 1 of docs/design.md, as the driver's gate checks it).
    Done again whenever the site's process changed (a new pid)."""

    _VERIFY_ON = ("url", "pid", "version", "instance", "database_mode", "health_path")

    def _verify(self, props: Props) -> Props:
        # Here, not at the top: httpx would add a tenth of a second to every program run.
        from zdd import health
        from zdd.errors import GateFailed

        identity = health.Identity(props["version"], props["instance"], props["database_mode"])
        try:
            health.wait_healthy(
                props["url"],
                identity,
                what=f"the {props['instance']} on {props['version']}",
                timeout=float(props["timeout"]),
                health_path=props["health_path"],
            )
        except GateFailed as exc:
            raise RuntimeError(str(exc)) from None
        return props

    def create(self, props: Props) -> CreateResult:
        outs = self._verify(props)
        return CreateResult(id_=f"{outs['instance']}-verified", outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        return DiffResult(changes=bool(changed(olds, news, self._VERIFY_ON)))

    def update(self, _id: str, _olds: Props, news: Props) -> UpdateResult:
        return UpdateResult(outs=self._verify(news))


def standalone_front_door_inputs(
    port: int, servers: Mapping[str, str], folder: Path
) -> dict[str, Any]:
    """A front door's inputs outside any stack (the bench's, the tests'): in front of
    `servers` (name: host:port), traffic on `primary`, writes passed, its files in `folder`."""
    return {
        "port": port,
        "servers": dict(servers),
        "origins": {name: f"http://{address}" for name, address in servers.items()},
        "active": "primary",
        "writes": str(EdgeWrites.PASS),
        "hold_seconds": DEFAULT_HOLD_WRITES_SECONDS,
        "health_path": "/healthz",
        "folder": str(folder),
        "log_path": str(folder / "frontdoor.log"),
    }


# How long a server that is to take the traffic may take to pass a health check.
_HEALTHY_WITHIN = 30.0


def _write_front_door_config(props: Props) -> haproxy.FrontDoorConfig:
    """The front door's files as `props` say: a HAProxy that starts (again) from them comes up
    with this traffic and this handling of writes."""
    config = haproxy.FrontDoorConfig(
        port=int(props["port"]),
        servers=props["servers"],
        active=props["active"],
        writes=EdgeWrites(props["writes"]),
        health_path=props["health_path"],
        hold_seconds=float(props["hold_seconds"]),
    )
    folder = Path(props["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / haproxy.LUA_FILE).write_text(haproxy.LUA_TEXT)
    (folder / haproxy.MAP_FILE).write_text(haproxy.map_text(config.writes, config.hold_seconds))
    (folder / haproxy.CONFIG_FILE).write_text(haproxy.render(config))
    return config


def _admin(props: Props) -> haproxy.AdminSocket:
    return haproxy.AdminSocket(Path(props["folder"]) / haproxy.SOCKET_FILE)


def _route(props: Props, config: haproxy.FrontDoorConfig, available: Iterable[str]) -> None:
    admin = _admin(props)
    admin.wait_ready(timeout=10)
    admin.route(config, available, timeout=_HEALTHY_WITHIN)


class CutoverProvider(ResourceProvider):
    """The switch to the clone, made once per deployment by the update that first needs it:
    the front door holds (or refuses) writes and sends new requests to the clone, and the
    create ends once no request is still on its way to the primary (rule 2 of docs/design.md).
    Every change of the primary waits for it. Its files are rewritten first, so a front door
    that restarts meanwhile comes back with the clone holding the traffic. A later phase never
    switches through it again (no update); its delete leaves the front door as it is, to the
    front door's own resource."""

    def create(self, props: Props) -> CreateResult:
        props = _whole(props)
        clone = {**props, "active": str(Instance.CLONE)}
        _route(clone, _write_front_door_config(clone), available=[str(i) for i in Instance])
        switched_at = time.time()
        # Here, not at the top: httpx would add a tenth of a second to every program run.
        from zdd.health import poll_until

        def in_flight() -> str | None:
            seen = _admin(props).servers()[str(Instance.PRIMARY)]
            busy = seen.takes_traffic or seen.in_flight
            return f"{seen.in_flight} request(s) still in flight to the primary" if busy else None

        within = float(props["drain_within"])
        # Polled often: the read-only window runs from the switch, and waits for this drain.
        complaint = poll_until(time.monotonic() + within, in_flight, interval=0.02)
        if complaint:
            raise RuntimeError(
                f"drain check: {complaint} after {within:.0f}s; the primary was not touched, "
                "the clone holds the traffic. Retry with `zdd resume`, or `zdd abort` to give "
                "the traffic back to the primary"
            )
        return CreateResult(id_="cutover", outs={**props, "switched_at": switched_at})

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        return DiffResult(changes=False)


class FrontDoorProvider(_ProcessProvider):
    """HAProxy, one per stack: traffic moves through its admin socket, never by a restart or
    a reload; a front door that died comes back from a config that starts with the current
    traffic. A front door whose traffic is not where its state says (a switch to the clone
    of the program's own, made earlier) is switched again by the next update."""

    # What the config is built from: a change starts a new HAProxy (ports, folder or health
    # path changed; never a traffic switch).
    _REPLACE_ON = ("port", "servers", "health_path", "folder")
    _UPDATE_ON = ("origins", "active", "writes", "hold_seconds", "cutover")

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        found = super().diff(_id, olds, news)
        if found.changes or not news.get("active"):
            return found
        try:
            servers = _admin(olds).servers()
        except haproxy.FrontDoorError:
            return DiffResult(changes=True)
        taking = [name for name, server in servers.items() if server.takes_traffic]
        return DiffResult(changes=taking != [news["active"]])

    def _start(self, props: Props) -> Props:
        props = _whole(props)
        config = _write_front_door_config(props)
        argv = [haproxy.find_binary(), "-db", "-f", haproxy.CONFIG_FILE]
        pid = self._launch(props, argv, cwd=props["folder"])
        with self._stopped_on_failure(props):
            _route(props, config, props["origins"])
        return {
            **props,
            "pid": pid,
            "public_url": f"http://127.0.0.1:{props['port']}",
            "socket_path": str(Path(props["folder"]) / haproxy.SOCKET_FILE),
        }

    def create(self, props: Props) -> CreateResult:
        outs = self._start(props)
        return CreateResult(id_=f"frontdoor:{outs['port']}", outs=outs)

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        if self._alive(olds):
            try:
                routed = _whole(news)
                _route(routed, _write_front_door_config(routed), routed["origins"])
                kept = {key: olds[key] for key in ("pid", "public_url", "socket_path")}
                return UpdateResult(outs={**routed, **kept})
            except haproxy.FrontDoorError:
                if self._alive(olds):
                    raise
        # Dead before or during the switch: it comes back from a config that already has the
        # new traffic.
        return UpdateResult(outs=self._start(news))

    def delete(self, _id: str, props: Props) -> None:
        super().delete(_id, props)
        for name in (haproxy.CONFIG_FILE, haproxy.MAP_FILE, haproxy.LUA_FILE, haproxy.SOCKET_FILE):
            (Path(props["folder"]) / name).unlink(missing_ok=True)
