"""The local target's rehearsal copies of the primary's data, one per database engine.

Each is consistent while the primary serves and never blocks it, and lives in the rehearsal's
scratch folder: a SQLite file made by SQLite's online backup, or, on PostgreSQL, a scratch
cluster made by a base backup of the stack's cluster and started writable on a free port, so
the migration and the current release reach the copy's own server, never the stack's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zdd.rehearsal import SiteCopy, scratch_dir
from zdd.sqlite_files import copy_files, copy_site_data, files_folder, tables

# The scratch cluster's folder in the rehearsal's scratch folder (data, socket and log).
SCRATCH_CLUSTER = "postgresql"


def scratch_data_dir(stack_dir: Path) -> Path:
    """The data folder of a rehearsal's scratch cluster in the stack's folder."""
    return _cluster_data(scratch_dir(stack_dir))


def _cluster_data(scratch: Path) -> Path:
    return scratch / SCRATCH_CLUSTER / "data"


@dataclass(frozen=True)
class SqliteCopy:
    """The primary's SQLite file and its files folder, copied by SQLite's online backup."""

    database: Path

    @property
    def source(self) -> str:
        return self.database.name

    def describe(self, scratch: Path) -> str:
        return (
            f"copy {self.database.name} and its files into {scratch} (online backup; the "
            "primary keeps serving)"
        )

    @contextmanager
    def copy(self, scratch: Path, owner: str) -> Iterator[SiteCopy]:
        copied = scratch / "copy.sqlite"
        copy_site_data(self.database, copied)
        yield SiteCopy(
            database=str(copied),
            files=files_folder(copied),
            rows=_sqlite_rows(copied),
            bytes=copied.stat().st_size,
        )

    def clean(self, scratch: Path) -> None:
        """A file copy runs nothing."""


def _sqlite_rows(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return sum(
            conn.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
            for table in tables(conn)
            if table.kind == "table"
        )


@dataclass(frozen=True)
class PostgresCopy:
    """The primary's database of the stack's cluster, and its files folder: a scratch cluster
    made by a base backup of the whole stack's cluster (consistent as of the backup's end; the
    primary keeps writing and is never blocked), started writable on a free port. The copied
    roles keep their passwords, so the site's own role migrates and serves the copy, as it does
    the primary, through a URL that names the scratch server's port."""

    server: Mapping[str, Any]  # the stack's `database_server` output
    database: str  # the primary database's name, the same in the copy
    files: Path

    @property
    def source(self) -> str:
        return f"database {self.database}"

    def describe(self, scratch: Path) -> str:
        return (
            f"copy the stack's PostgreSQL cluster (database {self.database}) with pg_basebackup "
            f"into {scratch / SCRATCH_CLUSTER}, start it writable on a free port, and copy "
            "the database's files (the primary keeps serving)"
        )

    @contextmanager
    def copy(self, scratch: Path, owner: str) -> Iterator[SiteCopy]:
        # Imported here: psycopg's import would cost every rehearsal of a SQLite stack.
        from zdd import postgres

        primary = postgres.server_from_outputs(self.server)
        with postgres.standalone_copy(
            primary, self.database, scratch / SCRATCH_CLUSTER, writable=True, owner=owner
        ) as server:
            # The database first, so every file a copied row names is there (rule 13).
            files = postgres.files_of(scratch, self.database)
            copy_files(self.files, files)
            rows, size = postgres.rows_and_bytes(server, self.database)
            yield SiteCopy(
                database=self.database,
                files=files,
                rows=rows,
                bytes=size,
                server_url=server.url(self.database),
            )

    def clean(self, scratch: Path) -> None:
        """A scratch server left by a killed rehearsal runs as the server's own OS user where
        we are root, out of reach of the owner ids: it is stopped through its pid file."""
        data = _cluster_data(scratch)
        if not (data / "postmaster.pid").exists():
            return
        from zdd import postgres

        postgres.stop_cluster(data, postgres.bin_dir(), mode="immediate")
