"""What is reported as a visitor's lost write: rows of the site's tables, never the migration
tool's own bookkeeping (a migration changes `alembic_version`, a visitor never does)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from zdd import postgres
from zdd.archive import BOOKKEEPING_TABLES, writes_since, writes_since_on_server


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


@pytest.mark.skipif(postgres.bin_dir() is None, reason="PostgreSQL is not installed")
def test_on_postgresql_a_visitors_rows_are_reported_against_the_restore_point(
    tmp_path: Path,
) -> None:
    with postgres.standalone_cluster(tmp_path / "cluster") as server:
        postgres.create_database(server, "served")
        with psycopg.connect(server.url("served"), autocommit=True) as conn:
            conn.execute("CREATE TABLE alembic_version (version_num text PRIMARY KEY)")
            conn.execute("INSERT INTO alembic_version VALUES ('0001')")
            conn.execute("CREATE TABLE articles (id serial PRIMARY KEY, title text)")
            conn.execute("INSERT INTO articles (title) VALUES ('first'), ('edited')")
            # No primary key, and a NULL among its values.
            conn.execute("CREATE TABLE tags (name text)")
            conn.execute("INSERT INTO tags VALUES ('kept'), (NULL)")
            point = tmp_path / postgres.restore_point_folder_name("rp")
            (tmp_path / "files").mkdir()
            postgres.restore_point(server, "served", point, tmp_path / "files")
            conn.execute("UPDATE alembic_version SET version_num = '0002'")
            conn.execute("INSERT INTO articles (title) VALUES ('a visitor''s')")
            conn.execute("UPDATE articles SET title = 'edited again' WHERE title = 'edited'")
            conn.execute("INSERT INTO tags VALUES ('new')")
        lost = writes_since_on_server(server, point, "served")
        assert set(lost.as_json()["tables"]) == {"articles", "tags"}
        assert lost.tables["articles"].added == [{"id": 3, "title": "a visitor's"}]
        assert lost.tables["articles"].changed == [{"id": 2, "title": "edited again"}]
        assert lost.tables["tags"].added == [{"name": "new"}]
        assert lost.rows == 3
        # The restore point's scratch database goes once compared.
        assert not postgres.database_exists(server, "zdd_compare")
