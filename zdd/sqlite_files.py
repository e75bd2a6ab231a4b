"""The local target's SQLite files and the site's persistent files beside them: copied online,
made read-only, proven by digest and archived, for the program and the driver alike (no Pulumi).

Any valid SQLite database is handled: WITHOUT ROWID tables, virtual tables (FTS5, R*Tree) and
their shadow tables, views, triggers, BLOBs, WAL mode with live writers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# SQLite's file header: bytes 18 and 19 are the file format's write and read versions. A write
# version above 2 makes SQLite open the file read-only for every connection, whatever its URL
# or its user (root included): the ReadOnly mode of a clone lives in its file.
_WRITE_VERSION_OFFSET = 18
_READ_ONLY_WRITE_VERSION = 3
_ROLLBACK_JOURNAL_VERSIONS = bytes([1, 1])
_CHUNK = 1 << 20


def online_backup(source: Path, destination: Path) -> None:
    """Copy a live SQLite database with SQLite's online backup (consistent while it is written)
    into one self-contained, writable file (rollback journal, no -wal beside it)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    remove_database(partial)
    # Read-only: a missing or misnamed source is an error here, never a new empty database.
    with (
        sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30) as src,
        sqlite3.connect(partial) as dst,
    ):
        # One step: a backup taken in several steps starts over whenever the live primary
        # writes between two of them, and under steady writes it may never finish. In WAL
        # mode the single read transaction does not block the primary's writers.
        src.backup(dst)
    # The copy carries the source's header: its WAL flag, or the read-only mark of a source
    # that was itself a read-only copy (a restore point). Both are reset here.
    _set_format_versions(partial, _ROLLBACK_JOURNAL_VERSIONS)
    partial.replace(destination)


def _set_format_versions(path: Path, versions: bytes) -> None:
    # Only for a file nobody else has open and with no -wal beside it (a fresh backup): its
    # pages are complete in the file, so the journal mode recorded in the header is free.
    with open(path, "r+b") as handle:
        handle.seek(_WRITE_VERSION_OFFSET)
        handle.write(versions)


def make_read_only(path: Path) -> None:
    """Mark a copy read-only in its own header: every connection may read it, none write."""
    with open(path, "r+b") as handle:
        handle.seek(_WRITE_VERSION_OFFSET)
        read_version = handle.read(2)[1:]
        handle.seek(_WRITE_VERSION_OFFSET)
        handle.write(bytes([_READ_ONLY_WRITE_VERSION]) + read_version)


def files_folder(database: Path) -> Path:
    """The site's persistent files (uploads) that belong with a database file: one folder per
    database generation, copied, proven and restored with it."""
    return database.with_name(f"{database.stem}.files")


def copy_files(source: Path, destination: Path) -> None:
    """Copy a files folder whole (a missing source is an empty one), replacing `destination`
    only once the copy is complete."""
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, partial, symlinks=True)
    else:
        partial.mkdir(parents=True)
    shutil.rmtree(destination, ignore_errors=True)
    partial.replace(destination)


def copy_site_data(source: Path, destination: Path) -> None:
    """A database and its files folder; the database first, so that every file a copied row
    names was already there when the files were copied."""
    online_backup(source, destination)
    copy_files(files_folder(source), files_folder(destination))


def restore_point_file_name(restore_point: str) -> str:
    """The file a local restore point is kept as, in its stack's folder."""
    return f"restore-{restore_point.replace(':', '')}.sqlite"


def baseline_path(path: Path) -> Path:
    """Where a read-write clone's database, or its archive, keeps the copy it started from (a
    SQLite file, or a PostgreSQL dump)."""
    return path.with_name(f"{path.stem}.baseline{path.suffix}")


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def remove_site_data(path: Path) -> None:
    remove_database(path)
    shutil.rmtree(files_folder(path), ignore_errors=True)


def _hash_file(path: Path, digest: hashlib._Hash) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def data_digest(database: Path) -> str:
    """A digest of a database file nobody writes (a restore point, a copy) and of its files
    folder, byte for byte: it costs one sequential read, less than the copy it proves."""
    digest = hashlib.sha256()
    _hash_file(database, digest)
    digest_files(files_folder(database), digest)
    return digest.hexdigest()


def proof_problem(
    path: Path, kind: str, present: bool, digest_of: Callable[[Path], str], digest: str
) -> str | None:
    """Why the restore point at `path` (a `kind`: file or folder, `present` or not) no longer
    proves to be what `digest` recorded when it was taken (gone, unreadable, changed), None
    when its digest, `digest_of(path)`, is still that one."""
    if not present:
        return f"its {kind} {path} is gone"
    try:
        now = digest_of(path)
    except OSError as exc:
        return f"its {kind} {path} cannot be read ({exc.strerror}: {exc.filename})"
    if now != digest:
        return f"its {kind} {path} or its files folder no longer holds what it held when taken"
    return None


def digest_files(folder: Path, digest: hashlib._Hash) -> None:
    """Add a files folder to `digest`: every path, link target and byte, in a fixed order (a
    missing folder adds nothing)."""
    for path in sorted(_files_under(folder)):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"\0{relative}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        else:
            _hash_file(path, digest)


def _files_under(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            yield Path(root) / name


@dataclass(frozen=True)
class Table:
    """One entry of `PRAGMA table_list`: `kind` is table, shadow (a virtual table's storage),
    virtual or view."""

    name: str
    kind: str
    without_rowid: bool

    def key_columns(self, conn: sqlite3.Connection) -> list[str]:
        """What identifies a row: the rowid, or a WITHOUT ROWID table's primary key."""
        if not self.without_rowid:
            return ["rowid"]
        columns = conn.execute(f'PRAGMA table_info("{self.name}")').fetchall()
        return [c[1] for c in sorted((c for c in columns if c[5]), key=lambda c: c[5])]


def tables(conn: sqlite3.Connection) -> list[Table]:
    """Every table of the main schema but SQLite's own, by name."""
    rows = conn.execute("PRAGMA main.table_list").fetchall()
    return sorted(
        (Table(name, kind, bool(wr)) for _schema, name, kind, _n, wr, _strict in rows
         if not name.startswith("sqlite_")),
        key=lambda t: t.name,
    )  # fmt: skip


def content_digest(path: Path) -> str:
    """A digest of the schema and every stored row, independent of page layout: two databases
    with the same content (a restore point and the database restored from it) agree.

    Virtual tables are read through their shadow tables, which hold their data."""
    digest = hashlib.sha256()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
        for entry in conn.execute(schema):
            digest.update(repr(entry).encode())
        for table in tables(conn):
            if table.kind not in ("table", "shadow"):
                continue
            digest.update(table.name.encode())
            order = ", ".join(f'"{c}"' for c in table.key_columns(conn))
            for row in conn.execute(f'SELECT * FROM "{table.name}" ORDER BY {order}'):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def archive_database(path: Path, archive: Path, keep: int) -> None:
    """Keep `path` and its baseline as `archive` (and `<archive>.baseline`), and only the newest
    `keep` archives in that folder."""
    online_backup(path, archive)
    online_backup(baseline_path(path), baseline_path(archive))
    for old in archives_beyond(archive.parent, archive.suffix, keep):
        remove_database(old)
        remove_database(baseline_path(old))


def archives_beyond(folder: Path, suffix: str, keep: int) -> list[Path]:
    """The archives ending in `suffix` in `folder` older than the newest `keep` (their
    baselines, which go with them, are not counted)."""
    archives = [a for a in folder.glob(f"*{suffix}") if not a.stem.endswith(".baseline")]
    return sorted(archives, key=lambda a: a.stat().st_mtime)[:-keep]
