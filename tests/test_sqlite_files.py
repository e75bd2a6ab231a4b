"""Any valid SQLite database copies, proves and restores; a read-only copy refuses writes
through every framework's URL; files travel with their database."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy

from zdd.appspec import Placement
from zdd.archive import compare
from zdd.phases import DatabaseMode
from zdd.sqlite_files import (
    content_digest,
    copy_site_data,
    data_digest,
    files_folder,
    make_read_only,
    online_backup,
    proof_problem,
)


def make_awkward_site(path: Path) -> None:
    """A database with everything real sites have: WITHOUT ROWID, FTS5 and its shadow tables,
    R*Tree, a view, a trigger, a large BLOB, in WAL mode; and an uploaded file."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            """
            CREATE TABLE tags (name TEXT PRIMARY KEY, uses INTEGER) WITHOUT ROWID;
            CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body BLOB);
            CREATE VIRTUAL TABLE search USING fts5(title);
            CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx);
            CREATE VIEW titles AS SELECT title FROM posts;
            CREATE TRIGGER index_post AFTER INSERT ON posts
                BEGIN INSERT INTO search(rowid, title) VALUES (new.id, new.title); END;
            """
        )
        conn.executemany("INSERT INTO tags VALUES (?, ?)", [("b", 2), ("a", 1)])
        conn.execute(
            "INSERT INTO posts (title, body) VALUES ('hello world', ?)", (os.urandom(3 << 20),)
        )
        conn.execute("INSERT INTO boxes VALUES (1, 0.5, 2.5)")
    files = files_folder(path)
    (files / "uploads").mkdir(parents=True)
    (files / "uploads" / "logo.png").write_bytes(b"\x89PNG not really")


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def test_a_database_with_every_kind_of_table_copies_while_written_and_restores(
    tmp_path: Path,
) -> None:
    primary = tmp_path / "primary.sqlite"
    make_awkward_site(primary)
    acknowledged: list[int] = []
    stop = threading.Event()

    def visitor() -> None:
        with sqlite3.connect(primary, timeout=30) as conn:
            while not stop.is_set():
                cursor = conn.execute("INSERT INTO posts (title) VALUES ('written meanwhile')")
                conn.commit()
                acknowledged.append(int(cursor.lastrowid or 0))

    writer = threading.Thread(target=visitor)
    writer.start()
    try:
        while len(acknowledged) < 20:
            time.sleep(0.01)
        before_copy = list(acknowledged)
        clone = tmp_path / "clone.sqlite"
        copy_site_data(primary, clone)
    finally:
        stop.set()
        writer.join()

    assert rows(clone, "PRAGMA integrity_check") == [("ok",)]
    ids = {r[0] for r in rows(clone, "SELECT id FROM posts")}
    assert set(before_copy) <= ids, "a write acknowledged before the copy is missing from it"
    assert rows(clone, "SELECT title FROM search WHERE search MATCH 'hello'") == [("hello world",)]
    assert rows(clone, "SELECT name FROM tags") == [("a",), ("b",)]
    assert (files_folder(clone) / "uploads" / "logo.png").read_bytes() == b"\x89PNG not really"
    assert not Path(f"{clone}-wal").exists(), "a copy is one self-contained file"

    # A restore point: read-only in its own header, proven by its digest, restored writable.
    point = tmp_path / "restore.sqlite"
    copy_site_data(clone, point)
    make_read_only(point)
    proof = data_digest(point)
    restored = tmp_path / "primary-g2.sqlite"
    copy_site_data(point, restored)
    assert data_digest(point) == proof, "restoring from a restore point changed it"
    assert content_digest(restored) == content_digest(point) == content_digest(clone)
    with sqlite3.connect(restored) as conn:
        conn.execute("INSERT INTO posts (title) VALUES ('after the restore')")
    assert (files_folder(restored) / "uploads" / "logo.png").exists()


def test_the_proof_changes_with_any_byte_of_the_database_or_its_files(tmp_path: Path) -> None:
    database = tmp_path / "site.sqlite"
    make_awkward_site(database)
    online_backup(database, tmp_path / "copy.sqlite")
    copy = tmp_path / "copy.sqlite"
    (files_folder(copy)).mkdir()
    before = data_digest(copy)
    assert data_digest(copy) == before
    (files_folder(copy) / "new.txt").write_text("uploaded later")
    assert data_digest(copy) != before
    (files_folder(copy) / "new.txt").unlink()
    assert data_digest(copy) == before
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE tags SET uses = 3 WHERE name = 'a'")
    assert data_digest(copy) != before


def test_a_backup_opens_its_source_read_only(tmp_path: Path) -> None:
    # A misnamed source is an error, never a new empty database copied as if it were the site.
    misnamed = tmp_path / "primary-g1.sqlite"
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        online_backup(misnamed, tmp_path / "copy.sqlite")
    assert not misnamed.exists()
    assert list(tmp_path.iterdir()) == []  # no copy, not even a partial one
    # A source nobody may write (a restore point) copies as it is, and stays as it was.
    source = tmp_path / "restore-rp1.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    before = source.read_bytes()
    source.chmod(0o444)
    online_backup(source, tmp_path / "copy.sqlite")
    assert rows(tmp_path / "copy.sqlite", "SELECT x FROM t") == [(1,)]
    assert source.read_bytes() == before


def test_content_digest_tells_a_missing_row_of_a_without_rowid_table(tmp_path: Path) -> None:
    database = tmp_path / "site.sqlite"
    make_awkward_site(database)
    before = content_digest(database)
    with sqlite3.connect(database) as conn:
        conn.execute("DELETE FROM tags WHERE name = 'b'")
    assert content_digest(database) != before


def read_only_copy(tmp_path: Path) -> tuple[Path, Placement]:
    primary = tmp_path / "primary.sqlite"
    make_awkward_site(primary)
    clone = tmp_path / "clone.sqlite"
    copy_site_data(primary, clone)
    make_read_only(clone)
    placement = Placement(
        "v1", "/r", "clone", DatabaseMode.READ_ONLY, str(clone), str(files_folder(clone)), 1
    )
    return clone, placement


def test_a_read_only_clone_refuses_writes_through_sqlalchemy(tmp_path: Path) -> None:
    clone, placement = read_only_copy(tmp_path)
    before = data_digest(clone)
    engine = sqlalchemy.create_engine(placement.database_url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM tags")).scalar() == 2
        with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly"):
            conn.execute(sqlalchemy.text("INSERT INTO tags VALUES ('c', 1)"))
    engine.dispose()
    assert data_digest(clone) == before


DJANGO_SITE = """
import os, sys
import dj_database_url
import django
from django.conf import settings
from django.db import connection, utils

# As a Django project's settings.py does it: the database from DATABASE_URL.
settings.configure(DATABASES={"default": dj_database_url.config()})
django.setup()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM tags")
    print("read", cursor.fetchone()[0])
    try:
        cursor.execute("INSERT INTO tags VALUES ('c', 1)")
    except utils.OperationalError as exc:
        print("refused", exc)
    else:
        print("written")
"""


@pytest.mark.parametrize("mode", [DatabaseMode.READ_ONLY, DatabaseMode.READ_WRITE])
def test_a_django_site_reads_database_url_unchanged(tmp_path: Path, mode: DatabaseMode) -> None:
    clone, placement = read_only_copy(tmp_path)
    if mode is DatabaseMode.READ_WRITE:
        clone = tmp_path / "writable.sqlite"
        copy_site_data(tmp_path / "primary.sqlite", clone)
        placement = Placement("v1", "/r", "clone", mode, str(clone), "/f", 1)
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_SITE],
        env={**os.environ, "DATABASE_URL": placement.database_url},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "read 2"
    if mode is DatabaseMode.READ_ONLY:
        assert lines[1].startswith("refused") and "readonly" in lines[1]
    else:
        assert lines[1] == "written"


def test_what_a_read_write_clone_wrote_is_reported_for_without_rowid_tables(
    tmp_path: Path,
) -> None:
    baseline = tmp_path / "baseline.sqlite"
    make_awkward_site(baseline)
    current = tmp_path / "current.sqlite"
    online_backup(baseline, current)
    with sqlite3.connect(current) as conn:
        conn.execute("INSERT INTO tags VALUES ('c', 7)")
        conn.execute("UPDATE tags SET uses = 9 WHERE name = 'a'")
        conn.execute("INSERT INTO posts (title) VALUES ('on the clone')")
    changes = compare(baseline, current)
    assert changes["tags"].added == [{"name": "c", "uses": 7}]
    assert changes["tags"].changed == [{"name": "a", "uses": 9}]
    assert [r["title"] for r in changes["search"].added] == ["on the clone"]
    assert "search_data" not in changes, "shadow tables are storage, not the site's rows"


def test_a_restore_point_proves_itself_only_while_its_digest_holds(tmp_path: Path) -> None:
    point = tmp_path / "restore-rp1.sqlite"
    gone = proof_problem(point, "file", point.is_file(), data_digest, "ab12")
    assert gone == f"its file {point} is gone"
    with sqlite3.connect(point) as conn:
        conn.execute("CREATE TABLE t (x)")
    taken = data_digest(point)
    assert proof_problem(point, "file", point.is_file(), data_digest, taken) is None
    with sqlite3.connect(point) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    changed = proof_problem(point, "file", point.is_file(), data_digest, taken)
    assert changed is not None and "no longer holds what it held when taken" in changed

    def unreadable(path: Path) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    refused = proof_problem(point, "file", point.is_file(), unreadable, taken)
    assert refused == f"its file {point} cannot be read (Permission denied: {point})"
