"""What a read-write clone was given, read from the archive its database was kept as.

In read-write mode the clone's database takes writes that the primary never sees. When the clone
goes, its database and the copy it started from (its baseline) are archived; the archive is
compared with the baseline, table by table and row by row: every row added, changed or deleted
is reported. The same comparison reports what a compatible clone took after a restore point,
from SQLite files or from databases of a stack's PostgreSQL cluster.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zdd.sqlite_files import Table, baseline_path, tables

if TYPE_CHECKING:
    import psycopg

    from zdd.postgres import Server

Row = dict[str, Any]
Rows = dict[tuple[Any, ...], Row]
# Tables a migration tool keeps for itself (the schema revision it applied): a migration changes
# them, a visitor never does, so a row there is never reported as a visitor's write.
BOOKKEEPING_TABLES = frozenset({"alembic_version"})


@dataclass
class TableChanges:
    added: list[Row] = field(default_factory=list)
    changed: list[Row] = field(default_factory=list)
    deleted: list[Row] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.added) + len(self.changed) + len(self.deleted)


@dataclass
class LostWrites:
    archive: str
    tables: dict[str, TableChanges]

    @property
    def rows(self) -> int:
        return sum(t.count for t in self.tables.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "archive": self.archive,
            "rows": self.rows,
            "tables": {
                name: {"added": t.added, "changed": t.changed, "deleted": t.deleted}
                for name, t in self.tables.items()
                if t.count
            },
        }

    def in_words(self) -> str:
        if not self.rows:
            return f"the clone took no writes; its database is archived at {self.archive}"
        parts = [
            f"{name}: {len(t.added)} added, {len(t.changed)} changed, {len(t.deleted)} deleted"
            for name, t in self.tables.items()
            if t.count
        ]
        return (
            f"{self.rows} row(s) were written to the clone and are NOT in the primary "
            f"({'; '.join(parts)}); the clone's database is archived at {self.archive}"
        )


@dataclass(frozen=True)
class RowReader:
    """One database as `compare_readers` reads it: the site's tables, and one table's rows by
    the columns that identify a row."""

    tables: frozenset[str]
    rows: Callable[[str], Rows]


def _rows(conn: sqlite3.Connection, table: Table) -> Rows:
    keys = table.key_columns(conn)
    selected = ", ".join(f'"{k}"' for k in keys)
    cursor = conn.execute(f'SELECT {selected}, * FROM "{table.name}"')
    names = [d[0] for d in cursor.description][len(keys) :]
    return {
        tuple(row[: len(keys)]): dict(zip(names, row[len(keys) :], strict=True)) for row in cursor
    }


def _tables(conn: sqlite3.Connection) -> dict[str, Table]:
    # What the site sees: its tables and virtual tables, not the shadow tables that store them
    # nor its migration tool's bookkeeping.
    return {
        t.name: t
        for t in tables(conn)
        if t.kind in ("table", "virtual") and t.name not in BOOKKEEPING_TABLES
    }


def _differ(old: Row, new: Row) -> bool:
    """On the columns both have: a column a migration added since is not a visitor's write."""
    return any(old[column] != new[column] for column in old.keys() & new.keys())


def _sqlite_reader(conn: sqlite3.Connection) -> RowReader:
    found = _tables(conn)
    return RowReader(frozenset(found), lambda name: _rows(conn, found[name]))


def compare_readers(before: RowReader, after: RowReader) -> dict[str, TableChanges]:
    """Row by row, what `after` has that `before` had not (by the rows' keys)."""
    result: dict[str, TableChanges] = {}
    for table in sorted(before.tables | after.tables):
        old = before.rows(table) if table in before.tables else {}
        new = after.rows(table) if table in after.tables else {}
        result[table] = TableChanges(
            added=[new[k] for k in sorted(new.keys() - old.keys())],
            changed=[new[k] for k in sorted(new.keys() & old.keys()) if _differ(old[k], new[k])],
            deleted=[old[k] for k in sorted(old.keys() - new.keys())],
        )
    return result


def compare(baseline: Path, current: Path) -> dict[str, TableChanges]:
    """Row by row, what `current` has that `baseline` had not (by rowid or primary key)."""
    with (
        sqlite3.connect(f"file:{baseline}?mode=ro", uri=True) as before,
        sqlite3.connect(f"file:{current}?mode=ro", uri=True) as after,
    ):
        return compare_readers(_sqlite_reader(before), _sqlite_reader(after))


def clone_writes(archive: Path) -> LostWrites:
    """What a read-write clone was given: its archive compared with the copy it started from."""
    return LostWrites(str(archive), compare(baseline_path(archive), archive))


def clone_writes_on_server(server: Server, archive: Path) -> LostWrites:
    """As `clone_writes`, for a clone's database kept as a PostgreSQL dump beside the dump of
    its baseline: both are restored into scratch databases of the stack's cluster for as long
    as they are compared."""
    from zdd import postgres

    # Fixed names: a comparison that was killed leaves its databases to the next, which
    # replaces them.
    baseline, taken = "zdd_clone_baseline", "zdd_clone_archive"
    try:
        postgres.restore_dump(server, baseline_path(archive), baseline)
        postgres.restore_dump(server, archive, taken)
        changes = _compared_on_server(server, baseline, taken)
    finally:
        for name in (baseline, taken):
            postgres.drop_database(server, name)
    return LostWrites(str(archive), changes)


def writes_since(restore_point: Path, served: Path) -> LostWrites:
    """What the database a compatible clone kept serving took after the restore point that the
    primary was rolled back to: those writes are not in the restored primary."""
    return LostWrites(str(served), compare(restore_point, served))


def writes_since_on_server(server: Server, restore_point: Path, served: str) -> LostWrites:
    """As `writes_since`, for a database of a stack's PostgreSQL cluster: what the restore
    point holds of the database is restored into a scratch database of that cluster for as
    long as they are compared (the restored primary generation has taken writes of its own
    since)."""
    from zdd import postgres

    # One name: a comparison that was killed leaves its database to the next, which replaces it.
    scratch = "zdd_compare"
    postgres.restore_database(server, restore_point, scratch)
    try:
        changes = _compared_on_server(server, scratch, served)
    finally:
        postgres.drop_database(server, scratch)
    return LostWrites(f"database {served} of the stack's PostgreSQL cluster", changes)


def _compared_on_server(server: Server, before: str, after: str) -> dict[str, TableChanges]:
    with server.admin(before) as earlier, server.admin(after) as later:
        return compare_readers(_postgres_reader(earlier), _postgres_reader(later))


_PG_TABLES = (
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
)
_PG_PRIMARY_KEY = (
    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
    "WHERE i.indrelid = %s::regclass AND i.indisprimary "
    "ORDER BY array_position(i.indkey, a.attnum)"
)


def _postgres_reader(conn: psycopg.Connection[tuple[object, ...]]) -> RowReader:
    """The site's tables of the public schema, their rows by primary key (by the whole row's
    text where a table has none: a changed row then shows as one deleted and one added)."""
    from psycopg import sql

    found = frozenset(
        str(name) for (name,) in conn.execute(_PG_TABLES) if name not in BOOKKEEPING_TABLES
    )

    def rows(table: str) -> Rows:
        quoted = sql.Identifier(table).as_string(conn)
        keys = [str(k) for (k,) in conn.execute(_PG_PRIMARY_KEY, (quoted,))]
        cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        names = [d.name for d in cursor.description or ()]
        result: Rows = {}
        for values in cursor:
            row = {name: _plain(value) for name, value in zip(names, values, strict=True)}
            key = tuple(row[k] for k in keys) if keys else tuple(repr(v) for v in row.values())
            result[key] = row
        return result

    return RowReader(found, rows)


def _plain(value: object) -> Any:
    """A value as JSON reports it (a timestamp or a decimal as its text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
