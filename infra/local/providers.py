"""Pulumi dynamic providers for the local target.

Each provider is a real Pulumi resource provider run by the engine: `create`, `diff`,
`update` and `delete` do the work, the state records what exists (pids, files), and a re-run
with the same inputs changes nothing unless something died, in which case `diff` reports it
and the update brings it back.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ResourceProvider,
    UpdateResult,
)

from infra.local import processes
from infra.local.frontdoor_server import ADMIN_PATH, ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER

Props = dict[str, Any]


def _whole(props: Props) -> Props:
    """Numbers come back from the engine as floats; ports and generations are whole."""
    return {
        k: int(v) if k in ("port", "generation", "pid") and v is not None else v
        for k, v in props.items()
    }


def _changed(olds: Props, news: Props, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if olds.get(k) != news.get(k)]


def online_backup(source: Path, destination: Path) -> None:
    """Copy a live SQLite database with SQLite's online backup (consistent while it is written)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(source, timeout=30) as src, sqlite3.connect(partial) as dst:
        # One step: a backup taken in several steps starts over whenever the live primary
        # writes between two of them, and under steady writes it may never finish. In WAL
        # mode the single read transaction does not block the primary's writers.
        src.backup(dst)
    partial.replace(destination)


def baseline_path(path: Path) -> Path:
    """Where a read-write clone's database keeps the copy it started from."""
    return path.with_name(f"{path.stem}.baseline.sqlite")


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def content_digest(path: Path) -> str:
    """A digest of every table's rows, independent of page layout."""
    digest = hashlib.sha256()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        for table in tables:
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
    return digest.hexdigest()


class SqliteDatabaseProvider(ResourceProvider):
    """A SQLite file; with `source`, a consistent copy of another database taken at create."""

    # Not `source`: a copy is taken once, when it is created. A new generation of the primary
    # (a rollback with database) must never replace the database under the live clone.
    _REPLACE_ON = ("path", "keep_baseline")

    def create(self, props: Props) -> CreateResult:
        path = Path(props["path"])
        source = props.get("source")
        started = time.monotonic()
        if source:
            online_backup(Path(source), path)
            if props.get("keep_baseline"):
                online_backup(path, baseline_path(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).close()
        outs = {
            **props,
            "size_bytes": path.stat().st_size,
            "copy_seconds": round(time.monotonic() - started, 3) if source else 0.0,
        }
        return CreateResult(id_=str(path), outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        replaces = _changed(olds, news, self._REPLACE_ON)
        missing = not Path(olds["path"]).exists()
        return DiffResult(
            changes=bool(replaces) or missing,
            replaces=replaces or (["path"] if missing else []),
            delete_before_replace=True,
        )

    def delete(self, _id: str, props: Props) -> None:
        remove_database(Path(props["path"]))
        remove_database(baseline_path(Path(props["path"])))


class RestorePointProvider(ResourceProvider):
    """A restore point of the primary database: an online backup taken before its first change."""

    def create(self, props: Props) -> CreateResult:
        database, backup = Path(props["database_path"]), Path(props["backup_path"])
        online_backup(database, backup)
        outs = {**props, "taken_at": time.time(), "digest": content_digest(backup)}
        return CreateResult(id_=props["restore_point"], outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        # Bound to its id and file: the database it was taken from may get a new generation.
        replaces = _changed(olds, news, ("restore_point", "backup_path"))
        return DiffResult(changes=bool(replaces), replaces=replaces)

    def delete(self, _id: str, props: Props) -> None:
        remove_database(Path(props["backup_path"]))


class MigrationProvider(ResourceProvider):
    """Runs the site's migrations for `version` against the primary database."""

    _KEYS = ("database_path", "revision", "generation")

    def _migrate(self, props: Props) -> Props:
        argv = [
            props["python"],
            "-m",
            "sampleapp",
            "migrate",
            "--version",
            props["version"],
            "--database",
            props["database_path"],
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"migration to {props['version']} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}".rstrip()
            )
        return {**_whole(props), "migrated_at": time.time()}

    def create(self, props: Props) -> CreateResult:
        return CreateResult(
            id_=f"{props['database_path']}@{props['version']}", outs=self._migrate(props)
        )

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        return DiffResult(changes=bool(_changed(olds, news, self._KEYS)))

    def update(self, _id: str, _olds: Props, news: Props) -> UpdateResult:
        return UpdateResult(outs=self._migrate(news))

    def delete(self, _id: str, props: Props) -> None:
        """Migrations are not undone: a database goes back only through a restore point."""


class _ProcessProvider(ResourceProvider):
    """A long-running process known by its port: started detached, found again by its
    command line (never by a pid alone, which the system may have given to another process)."""

    @staticmethod
    def _marker(props: Props) -> str:
        return f"--port {int(props['port'])}"

    def _alive(self, props: Props) -> bool:
        return processes.is_running(props.get("pid"), self._marker(props))

    def _launch(self, props: Props, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start `argv` (stopping any stray of ours on the port first) and wait until it listens."""
        log = Path(props["log_path"])
        processes.stop_matching(self._marker(props))
        process = processes.start_detached(argv, log, env=env)
        processes.wait_listening(process, int(props["port"]), log)
        return process.pid

    def delete(self, _id: str, props: Props) -> None:
        processes.stop(props.get("pid"), self._marker(props))


class WebAppProvider(_ProcessProvider):
    """One web app process of the sample site."""

    _KEYS = ("version", "instance", "database_mode", "database_path", "port", "python")

    def _start(self, props: Props) -> Props:
        props = _whole(props)
        argv = [
            props["python"],
            "-m",
            "sampleapp",
            "serve",
            "--version",
            props["version"],
            "--instance",
            props["instance"],
            "--database-mode",
            props["database_mode"],
            "--database",
            props["database_path"],
            "--port",
            str(props["port"]),
        ]
        pid = self._launch(props, argv)
        return {**props, "pid": pid, "url": f"http://127.0.0.1:{props['port']}"}

    def create(self, props: Props) -> CreateResult:
        outs = self._start(props)
        return CreateResult(id_=f"{outs['instance']}:{outs['port']}", outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        changed = _changed(olds, news, self._KEYS)
        return DiffResult(changes=bool(changed) or not self._alive(olds))

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        self.delete(_id, olds)
        return UpdateResult(outs=self._start(news))


class FrontDoorProvider(_ProcessProvider):
    """The local front door process; origin changes go through its admin API, not a restart."""

    def _admin(self, outs: Props, change: Props | None = None) -> Props:
        url = f"http://127.0.0.1:{int(outs['port'])}{ADMIN_PATH}"
        headers = {ADMIN_TOKEN_HEADER: outs["admin_token"]}
        response = (
            httpx.put(url, json=change, headers=headers, timeout=10)
            if change is not None
            else httpx.get(url, headers=headers, timeout=10)
        )
        response.raise_for_status()
        result: Props = response.json()
        return result

    def _start(self, props: Props, token: str) -> Props:
        props = _whole(props)
        argv = [
            props["python"],
            "-m",
            "infra.local.frontdoor_server",
            "--port",
            str(props["port"]),
            "--state",
            props["state_path"],
            "--active",
            props["active"],
        ]
        argv += [f"--origin={name}={url}" for name, url in sorted(props["origins"].items())]
        pid = self._launch(props, argv, env={ADMIN_TOKEN_ENV: token})
        outs = {
            **props,
            "pid": pid,
            "admin_token": token,
            "public_url": f"http://127.0.0.1:{props['port']}",
        }
        # A restarted front door resumes from its state file; make it match the stack.
        self._admin(outs, {"origins": props["origins"], "active": props["active"]})
        return outs

    def create(self, props: Props) -> CreateResult:
        Path(props["state_path"]).unlink(missing_ok=True)
        outs = self._start(props, secrets.token_urlsafe(24))
        return CreateResult(id_=f"frontdoor:{outs['port']}", outs=outs)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        replaces = _changed(olds, news, ("port", "state_path"))
        changed = _changed(olds, news, ("origins", "active", "python"))
        return DiffResult(
            changes=bool(replaces or changed) or not self._alive(olds),
            replaces=replaces,
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        token = olds["admin_token"]
        if not self._alive(olds):
            return UpdateResult(outs=self._start(news, token))
        outs = {**news, "pid": olds["pid"], "admin_token": token, "public_url": olds["public_url"]}
        self._admin(outs, {"origins": news["origins"], "active": news["active"]})
        return UpdateResult(outs=outs)

    def delete(self, _id: str, props: Props) -> None:
        super().delete(_id, props)
        Path(props["state_path"]).unlink(missing_ok=True)
