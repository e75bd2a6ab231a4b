"""The local target's PostgreSQL: one cluster per stack and its databases, created, copied while
the primary writes, made read-only, kept as base backups for restore points and proven by
digests the server computes, for the program and the driver alike (no Pulumi).

The server refuses to run as root: as root, every server-side program (initdb, postgres, pg_ctl)
runs as Debian's `postgres` user through `setpriv`, which executes it in place (no child, unlike
`runuser`), so the supervisor's signals reach the server itself, and so do pg_basebackup and
the copies of what it wrote, which only that user may read. Other clients (pg_dump,
pg_restore, psycopg) run as whoever runs the update and log in over TCP with a password.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from zdd.errors import BadInput
from zdd.processes import OWNER_VARIABLE, free_port
from zdd.sqlite_files import copy_files, digest_files, files_folder, proof_problem

# The OS user the server runs as when the update runs as root (Debian's package creates it).
SERVER_USER = "postgres"
# Where Debian installs each major version's programs; the newest is used.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# Set to a folder to use its programs instead (a folder without them: PostgreSQL is missing).
BIN_DIR_VARIABLE = "ZDD_POSTGRESQL_BIN_DIR"
# The cluster's roles: the administrator (a superuser the platform uses for copies and dumps),
# the site (owns the primary database and migrates it) and the reader (a read-only clone).
ADMIN_ROLE = "zdd_admin"
SITE_ROLE = "site"
READER_ROLE = "site_reader"
HOST = "127.0.0.1"
# A restore point is a folder: a base backup of the stack's cluster (`_BACKUP_DATA`) and the
# name of the database a restore takes out of it (`_BACKUP_DATABASE`).
RESTORE_POINT_SUFFIX = ".pgbackup"
_BACKUP_DATA = "data"
_BACKUP_DATABASE = "database"
# What the server checksums each file of a restore point with as it sends it (its manifest).
# A CRC finds any change but one crafted to keep it, which only someone who can write the
# server's files could make, and who could as well change the live database; SHA-256 made the
# restore point 1.28x pg_basebackup at 1 GiB, against 1.01x (README, "On PostgreSQL").
MANIFEST_CHECKSUMS = "CRC32C"
# Names a restore point's base backup in the server's activity and in `ps`.
RESTORE_POINT_LABEL = "zdd-restore-point"
# The clone's cluster: its folder in the stack's, and its log's name (`zdd logs`).
CLONE_CLUSTER = "postgresql-clone"
# A rollback's scratch cluster, a copy of the restore point it restores from.
RESTORE_CLUSTER = "postgresql-restore"
# What a stack's PostgreSQL needs of the installed programs.
_PROGRAMS = ("initdb", "postgres", "pg_ctl", "pg_dump", "pg_restore", "pg_basebackup",
             "pg_verifybackup", "pg_waldump")  # fmt: skip
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


# What psycopg raises when the server refuses or cannot be reached.
DatabaseError = psycopg.Error


class PostgresMissing(BadInput):
    """The app spec asks for PostgreSQL where its server programs are not installed."""


class PostgresFailed(RuntimeError):
    """A server program or a statement failed; the message carries its output."""


def bin_dir() -> Path | None:
    """The folder of the newest installed server's programs, None when there is none."""
    chosen = os.environ.get(BIN_DIR_VARIABLE)
    candidates = (
        [Path(chosen)]
        if chosen
        else sorted(DEBIAN_ROOT.glob("*/bin"), key=_major, reverse=True)
        + [Path(p).parent for p in [shutil.which("postgres")] if p]
    )
    for folder in candidates:
        if all((folder / name).is_file() for name in _PROGRAMS):
            return folder
    return None


def _major(folder: Path) -> int:
    name = folder.parent.name
    return int(name) if name.isdigit() else 0


def require_bin_dir() -> Path:
    found = bin_dir()
    if found is None:
        raise PostgresMissing(
            "the app spec asks for database engine postgresql, but PostgreSQL's server programs "
            f"({', '.join(_PROGRAMS)}) are not installed: run `make setup` (it installs "
            "Debian's postgresql package as root) or `apt-get install postgresql`"
        )
    return found


def generate_password() -> str:
    """A password that needs no quoting in a URL, a connection string or a shell."""
    return secrets.token_hex(24)


def database_name(role: str, generation: int) -> str:
    """A database's name in the stack's cluster: one per role and generation."""
    name = f"{role}_g{generation}"
    if not _NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a database name")
    return name


def restore_point_folder_name(restore_point: str) -> str:
    return f"restore-{restore_point.replace(':', '')}{RESTORE_POINT_SUFFIX}"


@dataclass(frozen=True)
class Server:
    """How the platform reaches one stack's cluster: its port and the role passwords."""

    port: int
    admin_password: str
    site_password: str
    reader_password: str
    bin_dir: Path

    def url(self, database: str, *, read_only: bool = False) -> str:
        """What a site connects with: SQLAlchemy 2.1 (psycopg 3 is its default PostgreSQL
        driver), Django's dj-database-url, psycopg and libpq all read this one form."""
        role, password = (
            (READER_ROLE, self.reader_password) if read_only else (SITE_ROLE, self.site_password)
        )
        return f"postgresql://{role}:{password}@{HOST}:{self.port}/{database}"

    def _admin_conninfo(self, database: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=HOST,
            port=self.port,
            user=ADMIN_ROLE,
            password=self.admin_password,
            dbname=database,
            connect_timeout=10,
        )

    @contextmanager
    def admin(self, database: str = "postgres") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(self._admin_conninfo(database), autocommit=True) as conn:
            yield conn

    def client_env(self) -> dict[str, str]:
        """The environment a client program (pg_dump, pg_restore) logs in with."""
        return {
            **os.environ,
            "PGHOST": HOST,
            "PGPORT": str(self.port),
            "PGUSER": ADMIN_ROLE,
            "PGPASSWORD": self.admin_password,
        }

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


def server_from_outputs(outputs: Mapping[str, Any]) -> Server:
    """The server as the stack's `database_server` output describes it."""
    return Server(
        port=int(outputs["port"]),
        admin_password=str(outputs["admin_password"]),
        site_password=str(outputs["site_password"]),
        reader_password=str(outputs["reader_password"]),
        bin_dir=Path(str(outputs["bin_dir"])),
    )


def data_dir(stack_dir: Path) -> Path:
    """The stack's cluster: its data folder, inside the stack's own folder."""
    return stack_dir / "postgresql" / "data"


def socket_dir(stack_dir: Path) -> Path:
    return stack_dir / "postgresql" / "run"


def clone_cluster_dir(stack_dir: Path) -> Path:
    """The clone's own cluster (data and socket folders), a physical copy of the stack's."""
    return stack_dir / CLONE_CLUSTER


def clone_data_dir(stack_dir: Path) -> Path:
    return clone_cluster_dir(stack_dir) / "data"


def clone_socket_dir(stack_dir: Path) -> Path:
    return clone_cluster_dir(stack_dir) / "run"


def restore_scratch_dir(stack_dir: Path) -> Path:
    """Where a rollback runs a server on a copy of its restore point (its data folder `data`)."""
    return stack_dir / RESTORE_CLUSTER


# -- the cluster ------------------------------------------------------------------------------


def as_server_user(argv: list[str]) -> list[str]:
    """`argv` as the server's own user when we are root (the server refuses root)."""
    if os.getuid() != 0:
        return argv
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", *argv]


def _give_to_server_user(path: Path) -> None:
    if os.getuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def _reachable_by_server_user(folder: Path) -> None:
    """The server's user must be able to reach its folders: every folder above them is
    traversable (no listing) for it."""
    for parent in folder.parents:
        if parent == Path("/") or os.getuid() != 0:
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def init_cluster(data_dir: Path, socket_dir: Path, binaries: Path, admin_password: str) -> None:
    """`initdb` into `data_dir` (a half-made one from an interrupted run is made again), with
    password logins only: no local user, root included, gets in without one."""
    shutil.rmtree(data_dir, ignore_errors=True)
    for folder in (data_dir, socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _give_to_server_user(folder)
    _reachable_by_server_user(data_dir)
    password_file = socket_dir / "initdb.pw"
    password_file.write_text(admin_password)
    password_file.chmod(0o600)
    _give_to_server_user(password_file)
    try:
        _run(
            as_server_user(
                [
                    str(binaries / "initdb"),
                    "--pgdata",
                    str(data_dir),
                    "--username",
                    ADMIN_ROLE,
                    "--pwfile",
                    str(password_file),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-instructions",
                ]
            ),
            "initdb",
        )
    finally:
        password_file.unlink(missing_ok=True)


def server_argv(
    data_dir: Path, socket_dir: Path, binaries: Path, port: int, *, read_only: bool = False
) -> list[str]:
    """The server in the foreground, on 127.0.0.1 only, logging to its output (the stack's
    log file). `read_only`: every transaction starts read-only, in every database (a clone's
    cluster, which as a hot standby refuses writes anyway)."""
    settings = [f"listen_addresses={HOST}", "logging_collector=off"]
    if read_only:
        settings.append("default_transaction_read_only=on")
    return as_server_user(
        [
            str(binaries / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-k",
            # Relative to the data folder, where the server runs: a unix socket's path holds at
            # most 107 bytes, which a stack folder in a deep checkout exceeds.
            os.path.relpath(socket_dir, data_dir),
            *(arg for setting in settings for arg in ("-c", setting)),
        ]
    )


def postmaster_pid(data_dir: Path) -> int | None:
    """The running server's pid, as its own pid file names it."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_cluster(data_dir: Path, binaries: Path | None, mode: str = "fast") -> None:
    """Stop the server of `data_dir` (found by its own pid file in the stack's folder, never by
    a pattern): `fast` ends sessions and shuts down cleanly, `immediate` does not wait."""
    if binaries is None or postmaster_pid(data_dir) is None:
        return
    subprocess.run(
        as_server_user(
            [str(binaries / "pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w", "-t", "30"]
        ),
        capture_output=True,
        check=False,
    )


def _pid_file_status(data_dir: Path) -> str | None:
    """What the server says of itself in its pid file (as `pg_ctl start -w` reads it):
    `starting`, `ready`, `standby` or `stopping`."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) > 7 else None


def wait_ready(server: Server, timeout: float = 60.0, data_dir: Path | None = None) -> None:
    """Until the server takes logins (it listens before its crash recovery has finished).
    With its `data_dir`, its pid file is watched first: closely, and without a refused login
    in its log every time."""
    deadline = time.monotonic() + timeout
    while data_dir is not None and time.monotonic() < deadline:
        if _pid_file_status(data_dir) in ("ready", "standby"):
            break
        time.sleep(0.02)
    while True:
        try:
            with server.admin() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresFailed(
                    f"the server takes no logins after {timeout:.0f}s: {exc}"
                ) from None
            time.sleep(0.2)


def ensure_roles(server: Server) -> None:
    """The site's and the reader's roles, with the stack's passwords (idempotent)."""
    with server.admin() as conn:
        for role, password in (
            (SITE_ROLE, server.site_password),
            (READER_ROLE, server.reader_password),
        ):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(role), sql.Literal(password)
                )
            )


# -- databases --------------------------------------------------------------------------------


def database_exists(server: Server, name: str) -> bool:
    with server.admin() as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def create_database(server: Server, name: str) -> None:
    """A new, empty database owned by the site's role, which only the site may connect to."""
    with server.admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(SITE_ROLE)
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))


def drop_database(server: Server, name: str) -> None:
    with server.admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def grant_reading(server: Server, source: str) -> None:
    """The reader may connect to `source` and read all of it, granted in the stack's cluster
    just before a base backup copies its catalogs (a hot standby takes no grant)."""
    with server.admin() as conn:
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(READER_ROLE)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(source), sql.Identifier(READER_ROLE)
            )
        )


def revoke_reading(server: Server, source: str) -> None:
    """The reader reads the copy only, never the stack's live database."""
    with server.admin() as conn:
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(source), sql.Identifier(READER_ROLE)
            )
        )


def base_backup(
    server: Server, source: str, data_dir: Path, socket_dir: Path, *, reader: bool = True
) -> None:
    """A physical copy of the whole cluster into `data_dir`, made ready to start as a hot
    standby with no upstream, which refuses every write.

    A base backup reads the files while the server keeps writing, and the WAL streamed beside
    it (`-X stream`) makes them consistent as of the backup's end; `-c fast` asks for the
    checkpoint it starts from at once. With `reader` (a read-only clone's copy), the reader's
    grant on `source` is copied with the catalogs, and taken back from the stack's cluster
    once the copy holds it; without it, the stack's catalogs are left as they are."""
    shutil.rmtree(data_dir, ignore_errors=True)
    for folder in (data_dir.parent, socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        _give_to_server_user(folder)
    _reachable_by_server_user(data_dir)
    if reader:
        grant_reading(server, source)
    try:
        done = subprocess.run(
            as_server_user(
                [
                    server.program("pg_basebackup"),
                    "--pgdata",
                    str(data_dir),
                    "--wal-method=stream",
                    "--checkpoint=fast",
                    # The server started on the copy syncs its whole data folder before its
                    # recovery begins (its control file says it was not shut down): one sync,
                    # not two. A copy that never started is made again.
                    "--no-sync",
                ]
            ),
            capture_output=True,
            env=server.client_env(),
            check=False,
        )
    finally:
        if reader:
            revoke_reading(server, source)
    if done.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise PostgresFailed(
            f"base backup of the cluster into {data_dir} failed (exit {done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')}"
        )
    _make_standby(data_dir)


def _make_standby(data_dir: Path) -> None:
    """A base backup made ready to start as a hot standby with no upstream (no
    primary_conninfo): it replays what the backup holds, then waits for more forever, taking
    read-only logins, refusing every write."""
    standby = data_dir / "standby.signal"
    standby.touch()
    _give_to_server_user(standby)


def make_writable(data_dir: Path) -> None:
    """A base backup started without `standby.signal` replays the streamed WAL up to the
    backup's end, as after a crash, and then takes writes like any primary (a rehearsal's copy,
    a read-write clone's)."""
    (data_dir / "standby.signal").unlink(missing_ok=True)


def _restore_argv(server: Server, destination: str) -> list[str]:
    return [
        server.program("pg_restore"),
        "--no-owner",
        "--no-acl",
        f"--role={SITE_ROLE}",
        "--exit-on-error",
        "--single-transaction",
        "--dbname",
        destination,
    ]


# -- restore points ---------------------------------------------------------------------------


def restore_point(server: Server, name: str, path: Path, files: Path) -> str:
    """A restore point of database `name` and its files folder: a base backup of the whole
    cluster into `path` (the name of the database a restore takes out of it beside), the files
    beside `path`, read-only on disk; returns their proof (`restore_point_digest`).

    It is taken inside the read-only window, where a base backup copies the files as they are
    (a dump wrote every row out again: 1.94x pg_basebackup at 1 GiB); `-c fast` asks for the
    checkpoint it starts from at once, and the WAL streamed beside makes the files consistent
    as of its end. The server checksums each file as it sends it and lists them in the
    backup's manifest, so the proof costs no second read of the copy. Unlike the clone's copy
    (`--no-sync`: the server started on it syncs it) no server ever starts on a restore point,
    and the migration it guards writes durably: pg_basebackup syncs it before it returns."""
    partial = path.with_name(path.name + ".partial")
    _remove_read_only(partial)
    partial.mkdir(parents=True)
    _give_to_server_user(partial)
    _reachable_by_server_user(partial)
    done = subprocess.run(
        as_server_user(
            [
                server.program("pg_basebackup"),
                "--pgdata",
                str(partial / _BACKUP_DATA),
                "--wal-method=stream",
                "--checkpoint=fast",
                f"--manifest-checksums={MANIFEST_CHECKSUMS}",
                f"--label={RESTORE_POINT_LABEL}",
            ]
        ),
        capture_output=True,
        env=server.client_env(),
        check=False,
    )
    if done.returncode != 0:
        _remove_read_only(partial)
        raise PostgresFailed(
            f"base backup of the cluster into {path} failed (exit {done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')}"
        )
    (partial / _BACKUP_DATABASE).write_text(name)
    copy_files(files, files_folder(path))
    _make_read_only(partial)
    _remove_read_only(path)
    partial.rename(path)
    return restore_point_digest(path)


def restore_point_digest(path: Path) -> str:
    """The proof of a restore point: the sha256 of its database's name, its backup's manifest
    (the server's checksum of every file it sent, and of the manifest itself), the WAL the
    manifest does not list, and its files folder. `restore_point_problem` also checks the
    backup's files against the manifest."""
    digest = hashlib.sha256((path / _BACKUP_DATABASE).read_bytes() + b"\0")
    backup = path / _BACKUP_DATA
    digest.update((backup / "backup_manifest").read_bytes())
    digest_files(backup / "pg_wal", digest)
    digest_files(files_folder(path), digest)
    return digest.hexdigest()


def restore_point_problem(path: Path, digest: str, binaries: Path) -> str | None:
    """Why restore point `path` no longer proves to be what `digest` recorded when it was taken
    (gone, changed, a file of its backup not what the manifest says), None when it does."""
    problem = proof_problem(path, "folder", path.is_dir(), restore_point_digest, digest)
    if problem:
        return problem
    checked = subprocess.run(
        [str(binaries / "pg_verifybackup"), "--quiet", str(path / _BACKUP_DATA)],
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        found = checked.stderr.strip().splitlines()[:3]
        return (
            f"its folder {path} no longer holds what it held when taken (pg_verifybackup: "
            f"{'; '.join(found)})"
        )
    return None


def restore_database(server: Server, point: Path, name: str) -> None:
    """A new database `name` in `server`'s cluster holding exactly what restore point `point`
    holds of its database.

    The point is copied into a scratch folder and a server started there, as a hot standby
    with no upstream on a free port, as the clone's; its database goes into `name` through
    `pg_dump | pg_restore`, and the scratch is stopped and removed. A server never starts on
    the point itself, which stays as it was proven for a repeated or resumed rollback."""
    scratch = restore_scratch_dir(point.parent)
    source = (point / _BACKUP_DATABASE).read_text()
    _discard_scratch(scratch, server.bin_dir)
    data, run = scratch / "data", scratch / "run"
    for folder in (scratch, run):
        folder.mkdir(parents=True, exist_ok=True)
        _give_to_server_user(folder)
    _reachable_by_server_user(data)
    try:
        # As the server's user, who owns the copy then; a reflink where the file system can.
        copying = ["cp", "-a", "--reflink=auto", str(point / _BACKUP_DATA), str(data)]
        _run(as_server_user(copying), f"copying restore point {point.name}")
        _run(as_server_user(["chmod", "-R", "u+w", str(data)]), "making the copy writable")
        data.chmod(0o700)  # the server starts on nothing more open
        _make_standby(data)
        copy = replace(server, port=free_port())
        with _serving(copy, data, run, scratch.with_suffix(".log")):
            create_database(server, name)
            _dump_into(copy, source, server, name)
    finally:
        _discard_scratch(scratch, server.bin_dir)


def remove_restore_point(path: Path) -> None:
    """A restore point, a half-taken one and its files folder, read-only as they are."""
    for folder in (path, path.with_name(path.name + ".partial")):
        _remove_read_only(folder)
    shutil.rmtree(files_folder(path), ignore_errors=True)


def _dump_into(source: Server, database: str, destination: Server, name: str) -> None:
    with tempfile.TemporaryFile() as dump_errors:
        dump = subprocess.Popen(
            [
                source.program("pg_dump"),
                "--format=custom",
                "--compress=0",
                "--no-owner",
                "--no-acl",
                "--dbname",
                database,
            ],
            stdout=subprocess.PIPE,
            stderr=dump_errors,
            env=source.client_env(),
        )
        assert dump.stdout is not None
        restored = subprocess.run(
            _restore_argv(destination, name),
            stdin=dump.stdout,
            capture_output=True,
            env=destination.client_env(),
            check=False,
        )
        dump.stdout.close()
        if dump.wait() != 0 or restored.returncode != 0:
            dump_errors.seek(0)
            raise PostgresFailed(
                f"restoring database {database} of the restore point into {name} failed:\n"
                f"{dump_errors.read().decode(errors='replace')}"
                f"{restored.stderr.decode(errors='replace')}"
            )


def _discard_scratch(scratch: Path, binaries: Path) -> None:
    """A scratch server left by a restore that did not finish is stopped (by its own pid file),
    and its folder removed."""
    stop_cluster(scratch / "data", binaries, mode="immediate")
    shutil.rmtree(scratch, ignore_errors=True)


def _make_read_only(folder: Path) -> None:
    """Nothing writes to a restore point by mistake, and no server starts on it: PostgreSQL
    refuses a data folder it cannot write to."""
    for root, dirs, names in os.walk(folder, topdown=False):
        for entry in names:
            if not os.path.islink(os.path.join(root, entry)):
                os.chmod(os.path.join(root, entry), 0o400)
        for entry in dirs:
            if not os.path.islink(os.path.join(root, entry)):
                os.chmod(os.path.join(root, entry), 0o500)
    folder.chmod(0o500)


def _remove_read_only(folder: Path) -> None:
    if not folder.exists():
        return
    # Its entries can be removed once each folder may be written to.
    for root, _dirs, _names in os.walk(folder):
        os.chmod(root, 0o700)
    shutil.rmtree(folder)


# A read-write clone's baseline and archive are dumps in pg_dump's custom format.
DUMP_SUFFIX = ".pgdump"


def dump_archive(server: Server, name: str, path: Path) -> None:
    """A compressed dump of `name` into `path`, read-only once complete: a read-write clone's
    baseline and archive, which are kept for people to read and never restored against a
    clock, so unlike a restore point they are worth compressing."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            server.program("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-acl",
            "--file",
            str(partial),
            "--dbname",
            name,
        ],
        capture_output=True,
        env=server.client_env(),
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise PostgresFailed(
            f"dumping database {name} into {path} failed:\n{done.stderr.decode(errors='replace')}"
        )
    partial.chmod(0o444)
    partial.replace(path)


def restore_dump(server: Server, dump: Path, name: str) -> None:
    """A new database `name` holding exactly what `dump_archive`'s dump `dump` holds."""
    create_database(server, name)
    done = subprocess.run(
        [*_restore_argv(server, name), str(dump)],
        capture_output=True,
        env=server.client_env(),
        check=False,
    )
    if done.returncode != 0:
        raise PostgresFailed(
            f"restoring {dump.name} into database {name} failed:\n"
            f"{done.stderr.decode(errors='replace')}"
        )


# -- proofs -----------------------------------------------------------------------------------

# Per table, computed by the server in one scan and no sort: the row count and the sum of a
# 64-bit hash of each row's text (two seeds), as numeric so nothing overflows; a sum does not
# depend on the order rows are stored in. Python only combines one line per table.
# `hashtextextended` is the server's own hash (the one its hash indexes use): several times
# cheaper than md5 per row, so the proof costs less than the copy it proves.
_TABLE_DIGEST: LiteralString = (
    "SELECT count(*), "
    "coalesce(sum(hashtextextended(t::text, 0)::numeric), 0), "
    "coalesce(sum(hashtextextended(t::text, 1)::numeric), 0) "
    "FROM {} AS t"
)
_COLUMNS: LiteralString = (
    "SELECT table_schema, table_name, column_name, data_type, ordinal_position "
    "FROM information_schema.columns "
    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
    "ORDER BY table_schema, table_name, ordinal_position"
)
_TABLES: LiteralString = (
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
    "ORDER BY table_schema, table_name"
)


def content_digest(server: Server, name: str) -> str:
    """A digest of a database's schema and rows, the same for two databases with the same
    content (a copy and its source at the copy's moment, a dump and what it restores to)."""
    digest = hashlib.sha256()
    with server.admin(name) as conn, conn.transaction():
        # One snapshot for every table.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for column in conn.execute(_COLUMNS):
            digest.update(repr(column).encode())
        for schema, table in conn.execute(_TABLES).fetchall():
            query = sql.SQL(_TABLE_DIGEST).format(sql.Identifier(str(schema), str(table)))
            row = conn.execute(query).fetchone()
            digest.update(f"{schema}.{table}:{row}".encode())
    return digest.hexdigest()


def rows_and_bytes(server: Server, name: str) -> tuple[int, int]:
    """A database's rows (every table's, counted) and its size on disk."""
    counted: list[object] = []
    with server.admin(name) as conn:
        for schema, table in conn.execute(_TABLES).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(str(schema), str(table))
            )
            counted += conn.execute(query).fetchone() or ()
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone() or (0,)
    return sum(int(str(n)) for n in counted), int(str(size[0]))


def site_data_digest(server: Server, name: str, files: Path) -> str:
    """A database's content digest and its files folder's, as one proof."""
    digest = hashlib.sha256(content_digest(server, name).encode())
    digest_files(files, digest)
    return digest.hexdigest()


def files_of(state_dir: Path, name: str) -> Path:
    """The site's persistent files beside a database of the stack's cluster."""
    return files_folder(state_dir / f"{name}.pg")


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostgresFailed(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


@contextmanager
def _running(
    argv: list[str], log_path: Path, owner: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, OWNER_VARIABLE: owner} if owner else None
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    try:
        yield process
    finally:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def standalone_copy(
    server: Server, source: str, folder: Path, *, writable: bool = False, owner: str | None = None
) -> Iterator[Server]:
    """A read-only clone's cluster as the providers make it (a base backup of `server`'s
    cluster, started as a hot standby with no upstream) in `folder`, on a free port, taking
    logins, for as long as the block runs (the bench's, the tests', a rehearsal's); stopped
    afterwards.

    `writable`: the copy takes writes instead (a rehearsal migrates it). `owner`: the owner id
    its server carries, where it runs as our own user (as root it is found by its pid file)."""
    data, run = folder / "data", folder / "run"
    # A writable copy logs in as the site, never as the reader: the grant is not needed.
    base_backup(server, source, data, run, reader=not writable)
    if writable:
        make_writable(data)
    copy = replace(server, port=free_port())
    log = folder / "server.log"
    with _serving(copy, data, run, log, writable=writable, owner=owner):
        yield copy


@contextmanager
def _serving(
    copy: Server,
    data: Path,
    run: Path,
    log: Path,
    *,
    writable: bool = False,
    owner: str | None = None,
) -> Iterator[Server]:
    """A server on copy `data` at `copy`'s port, taking logins, while the block runs: a hot
    standby, or with `writable` one that takes writes."""
    argv = server_argv(data, run, copy.bin_dir, copy.port, read_only=not writable)
    with _running(argv, log, owner):
        try:
            wait_ready(copy, data_dir=data)
            yield copy
        finally:
            stop_cluster(data, copy.bin_dir)


@contextmanager
def standalone_cluster(folder: Path) -> Iterator[Server]:
    """A cluster in `folder` with the roles and settings a stack's has, for as long as the
    block runs (the bench's, the tests'); stopped, and its process reaped, afterwards."""
    binaries = require_bin_dir()
    server = Server(
        port=free_port(),
        admin_password=generate_password(),
        site_password=generate_password(),
        reader_password=generate_password(),
        bin_dir=binaries,
    )
    data, run = folder / "data", folder / "run"
    init_cluster(data, run, binaries, server.admin_password)
    with _running(server_argv(data, run, binaries, server.port), folder / "server.log"):
        try:
            wait_ready(server)
            ensure_roles(server)
            yield server
        finally:
            stop_cluster(data, binaries)
