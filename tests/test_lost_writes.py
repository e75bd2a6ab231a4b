"""What is reported as a visitor's lost write: rows of the site's tables, never the migration
tool's own bookkeeping (a migration changes `alembic_version`, a visitor never does)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from zdd.archive import BOOKKEEPING_TABLES, writes_since


def _database(path: Path, revision: str, titles: list[str]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        conn.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT)")
        conn.executemany("INSERT INTO articles (title) VALUES (?)", [(t,) for t in titles])
    return path


def test_a_migrated_revision_is_no_lost_write_but_a_visitors_row_is(tmp_path: Path) -> None:
    point = _database(tmp_path / "point.sqlite", "0001", ["first"])
    served = _database(tmp_path / "served.sqlite", "0001a", ["first", "a visitor's"])
    lost = writes_since(point, served)
    assert "alembic_version" in BOOKKEEPING_TABLES
    assert lost.rows == 1
    assert set(lost.as_json()["tables"]) == {"articles"}
    assert lost.tables["articles"].added == [{"id": 2, "title": "a visitor's"}]


def test_only_a_migration_means_nothing_was_lost(tmp_path: Path) -> None:
    point = _database(tmp_path / "point.sqlite", "0001", ["first"])
    served = _database(tmp_path / "served.sqlite", "0002", ["first"])
    assert writes_since(point, served).rows == 0
