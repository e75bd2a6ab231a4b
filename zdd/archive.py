"""What a read-write clone was given, read from the archive its database was kept as.

In read-write mode the clone's database takes writes that the primary never sees. When the clone
goes, its database and the copy it started from (its baseline) are archived; the archive is
compared with the baseline, table by table and row by row: every row added, changed or deleted
is reported.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zdd.sqlite_files import Table, baseline_path, tables

Row = dict[str, Any]
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


def _rows(conn: sqlite3.Connection, table: Table) -> dict[tuple[Any, ...], Row]:
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


def compare(baseline: Path, current: Path) -> dict[str, TableChanges]:
    """Row by row, what `current` has that `baseline` had not (by rowid or primary key)."""
    with (
        sqlite3.connect(f"file:{baseline}?mode=ro", uri=True) as before,
        sqlite3.connect(f"file:{current}?mode=ro", uri=True) as after,
    ):
        result: dict[str, TableChanges] = {}
        had, has = _tables(before), _tables(after)
        for table in sorted(had.keys() | has.keys()):
            old = _rows(before, had[table]) if table in had else {}
            new = _rows(after, has[table]) if table in has else {}
            result[table] = TableChanges(
                added=[new[k] for k in sorted(new.keys() - old.keys())],
                changed=[
                    new[k] for k in sorted(new.keys() & old.keys()) if _differ(old[k], new[k])
                ],
                deleted=[old[k] for k in sorted(old.keys() - new.keys())],
            )
        return result


def clone_writes(archive: Path) -> LostWrites:
    """What a read-write clone was given: its archive compared with the copy it started from."""
    return LostWrites(str(archive), compare(baseline_path(archive), archive))


def writes_since(restore_point: Path, served: Path) -> LostWrites:
    """What the database a compatible clone kept serving took after the restore point that the
    primary was rolled back to: those writes are not in the restored primary."""
    return LostWrites(str(served), compare(restore_point, served))
