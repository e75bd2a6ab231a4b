"""The local target's PostgreSQL: one cluster per stack and its databases, created, copied while
the primary writes, made read-only, dumped for restore points and proven by a digest the server
computes, for the program and the driver alike (no Pulumi).

The server refuses to run as root: as root, every server-side program (initdb, postgres, pg_ctl)
runs as Debian's `postgres` user through `setpriv`, which executes it in place (no child, unlike
`runuser`), so the supervisor's signals reach the server itself. Clients (pg_dump, pg_restore,
psycopg) run as whoever runs the update and log in over TCP with a password.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, LiteralString

import psycopg
from psycopg import sql

from zdd.errors import BadInput
from zdd.processes import OWNER_VARIABLE, free_port
from zdd.sqlite_files import copy_files, digest_files, files_folder

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
# A restore point of a PostgreSQL database is a dump in pg_dump's custom format.
DUMP_SUFFIX = ".pgdump"
# The clone's cluster: its folder in the stack's, and its log's name (`zdd logs`).
CLONE_CLUSTER = "postgresql-clone"
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
        if all((folder / name).is_file() for name in ("initdb", "postgres", "pg_ctl", "pg_dump")):
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
            "(initdb, postgres, pg_ctl, pg_dump) are not installed: run `make setup` (it installs "
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


def restore_point_file_name(restore_point: str) -> str:
    return f"restore-{restore_point.replace(':', '')}{DUMP_SUFFIX}"


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
    # No primary_conninfo: it replays what the backup holds and waits for more forever.
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


def dump_database(server: Server, name: str, path: Path) -> hashlib._Hash:
    """A dump of `name` at one moment into `path`, made read-only once complete; the sha256 of
    its bytes, taken as they are written (the restore point's proof needs no second read).

    Uncompressed: a restore point is taken inside the read-only window, where pg_dump's gzip
    (one core) would cost more than writing the bytes; `make bench` measures both. Written
    through a pipe, the custom format has no data offsets, which only a parallel or partial
    restore would want; the whole, sequential restore reads it as it reads a file."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    dump = subprocess.Popen(
        [
            server.program("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-acl",
            "--compress=0",
            "--dbname",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.client_env(),
    )
    try:
        assert dump.stdout is not None
        with contextlib.suppress(OSError):
            # pg_dump writes ahead while a chunk is hashed (the default pipe holds 64 KiB).
            fcntl.fcntl(dump.stdout.fileno(), fcntl.F_SETPIPE_SZ, _DUMP_CHUNK)
        _write_and_hash(dump.stdout, partial, digest)
        errors = dump.stderr.read() if dump.stderr else b""
        if dump.wait() != 0:
            raise PostgresFailed(
                f"dumping database {name} failed:\n{errors.decode(errors='replace')}"
            )
    except BaseException:
        dump.kill()
        dump.wait()
        partial.unlink(missing_ok=True)
        raise
    partial.chmod(0o444)
    partial.replace(path)
    return digest


_DUMP_CHUNK = 1 << 20


def _write_and_hash(source: IO[bytes], path: Path, digest: hashlib._Hash) -> None:
    """Copy `source` into `path`, hashing on a second thread (hashlib lets go of the
    interpreter lock), so the hash costs little beside the dump."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)

    def hash_chunks() -> None:
        while (chunk := chunks.get()) is not None:
            digest.update(chunk)

    hasher = threading.Thread(target=hash_chunks, daemon=True)
    hasher.start()
    try:
        with open(path, "wb") as out:
            while chunk := source.read(_DUMP_CHUNK):
                out.write(chunk)
                chunks.put(chunk)
    finally:
        chunks.put(None)
        hasher.join()


def restore_point(server: Server, name: str, path: Path, files: Path) -> str:
    """A restore point of database `name` and its files folder: the dump into `path`, the
    files beside it, and their proof, the same digest `sqlite_files.data_digest` reads back."""
    digest = dump_database(server, name, path)
    copy_files(files, files_folder(path))
    digest_files(files_folder(path), digest)
    return digest.hexdigest()


def restore_database(server: Server, dump: Path, name: str) -> None:
    """A new database `name` holding exactly what `dump` holds."""
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
    copy = Server(
        port=free_port(),
        admin_password=server.admin_password,
        site_password=server.site_password,
        reader_password=server.reader_password,
        bin_dir=server.bin_dir,
    )
    data, run = folder / "data", folder / "run"
    # A writable copy logs in as the site, never as the reader: the grant is not needed.
    base_backup(server, source, data, run, reader=not writable)
    if writable:
        make_writable(data)
    argv = server_argv(data, run, server.bin_dir, copy.port, read_only=not writable)
    with _running(argv, folder / "server.log", owner):
        try:
            wait_ready(copy, data_dir=data)
            yield copy
        finally:
            stop_cluster(data, server.bin_dir)


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
