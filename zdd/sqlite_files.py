"""The local target's SQLite files, copied online, compared by content and archived, for the
program and the driver alike (no Pulumi here)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def online_backup(source: Path, destination: Path) -> None:
    """Copy a live SQLite database with SQLite's online backup (consistent while it is written)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    partial.unlink(missing_ok=True)
    # Read-only: a missing or misnamed source is an error here, never a new empty database.
    with (
        sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30) as src,
        sqlite3.connect(partial) as dst,
    ):
        # One step: a backup taken in several steps starts over whenever the live primary
        # writes between two of them, and under steady writes it may never finish. In WAL
        # mode the single read transaction does not block the primary's writers.
        src.backup(dst)
    partial.replace(destination)


def restore_point_file_name(restore_point: str) -> str:
    """The file a local restore point is kept as, in its stack's folder."""
    return f"restore-{restore_point.replace(':', '')}.sqlite"


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


def archive_database(path: Path, archive: Path, keep: int) -> None:
    """Keep `path` and its baseline as `archive` (and `<archive>.baseline`), and only the newest
    `keep` archives in that folder."""
    online_backup(path, archive)
    online_backup(baseline_path(path), baseline_path(archive))
    archives = [a for a in archive.parent.glob("*.sqlite") if not a.stem.endswith(".baseline")]
    for old in sorted(archives, key=lambda a: a.stat().st_mtime)[:-keep]:
        remove_database(old)
        remove_database(baseline_path(old))
