"""The benchmark's database: filler rows that grow the primary's, and timings of its copy."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zdd.bench.metrics import MIB, rounded, throughput_mb_s, timed_summary
from zdd.sqlite_files import online_backup, remove_database

FILLER_TABLE = "bench_filler"
FILLER_ROW_BYTES = 2000
FILLER_BATCH_BYTES = 16 * MIB
COPY_REPEATS = 5


def rows_needed(target_bytes: float, current_bytes: float, bytes_per_row: float) -> int:
    """Filler rows of `bytes_per_row` (on disk) that bring a database from current to target."""
    if bytes_per_row <= 0:
        raise ValueError("bytes_per_row must be positive")
    return max(0, math.ceil((target_bytes - current_bytes) / bytes_per_row))


def _database_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(page_size)


def grow_database(path: Path, size_mb: float) -> int:
    """Add filler rows (random bytes) to `path` until it holds `size_mb` MiB; returns bytes.

    Works on the live primary (WAL: its readers carry on); the WAL is checkpointed at the end
    so that the database file itself has the size. The rows go to a table of the bench's own,
    so a migration does the same work at every size and what grows is the copying.
    """
    target = size_mb * MIB
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {FILLER_TABLE} "
            "(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
        )
        conn.commit()
        per_row = FILLER_ROW_BYTES * 1.05
        while (size := _database_bytes(conn)) < target:
            count = min(rows_needed(target, size, per_row), FILLER_BATCH_BYTES // FILLER_ROW_BYTES)
            conn.execute(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
                f"INSERT INTO {FILLER_TABLE} (payload) SELECT randomblob(?) FROM n",
                (count, FILLER_ROW_BYTES),
            )
            conn.commit()
            grown = _database_bytes(conn) - size
            if grown > 0:
                per_row = grown / count
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return _database_bytes(conn)
    finally:
        conn.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(
    source: Path,
    destination: Path,
    *,
    pages: int = 4096,
    synchronous: str = "FULL",
    journal: str = "DELETE",
    mmap: bool = False,
    fsync: bool = False,
) -> None:
    """An online backup like `online_backup`, with the knobs the profile turns: the step size,
    the destination's `synchronous` and `journal_mode`, reading the source through mmap, one
    fsync of the finished file."""
    remove_database(destination)
    src, dst = sqlite3.connect(source, timeout=30), sqlite3.connect(destination)
    try:
        if mmap:
            src.execute(f"PRAGMA mmap_size={1 << 40}")
        dst.execute(f"PRAGMA journal_mode={journal}")
        dst.execute(f"PRAGMA synchronous={synchronous}")
        src.backup(dst, pages=pages)
    finally:
        src.close()
        dst.close()
    if fsync:
        _fsync(destination)


def _fsynced_copy(source: Path, destination: Path) -> None:
    shutil.copyfile(source, destination)
    _fsync(destination)


def time_copies(path: Path, scratch: Path, repeats: int = COPY_REPEATS) -> dict[str, Any]:
    """Median seconds (interleaved repeats, on a quiet database) of the project's
    `online_backup` (`copy`), `shutil.copyfile` (`raw`: page cache, no fsync), copyfile plus one
    fsync, and two variants of the backup that show where its time goes. `throughput_ratio` is
    the copy's throughput over the plain copy's (the target: at least 0.5)."""
    candidates: dict[str, Callable[[], object]] = {
        "copy": lambda: online_backup(path, scratch),
        "raw": lambda: shutil.copyfile(path, scratch),
        "raw_fsync": lambda: _fsynced_copy(path, scratch),
        "backup_sync_off": lambda: _backup(path, scratch, synchronous="OFF"),
        # One step (a single read transaction: never restarted by a writer), the source read
        # through mmap, no journal and no syncs on the fresh destination, one fsync at the end.
        "backup_one_step": lambda: _backup(
            path, scratch, pages=-1, synchronous="OFF", journal="OFF", mmap=True, fsync=True
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):  # interleaved, so that noise from other work hits all alike
        for name, copy in candidates.items():
            remove_database(scratch)
            started = time.perf_counter()
            copy()
            times[name].append(time.perf_counter() - started)
    remove_database(scratch)
    size = path.stat().st_size
    median, figures = timed_summary(
        times,
        {
            "copy": "copy_seconds",
            "raw": "raw_copy_seconds",
            "raw_fsync": "raw_copy_fsync_seconds",
            "backup_sync_off": "copy_synchronous_off_seconds",
            "backup_one_step": "copy_one_step_seconds",
        },
    )
    return {
        "bytes": size,
        **figures,
        "copy_mb_per_s": throughput_mb_s(size, median["copy"]),
        "raw_copy_mb_per_s": throughput_mb_s(size, median["raw"]),
        "throughput_ratio": rounded(median["raw"] / median["copy"]),
        "one_step_throughput_ratio": rounded(median["raw"] / median["backup_one_step"]),
    }
