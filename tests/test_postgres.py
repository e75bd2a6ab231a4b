"""A stack's PostgreSQL, on a real server the tests start and stop: the clone's copy (a cluster
of its own) is consistent while the primary writes and does not hold it up, a write reaching the
read-only clone is refused by the server itself, a change to it is what the driver's check finds,
and a restore point restores exactly what it proved."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from zdd import appspec, postgres
from zdd.environment import Environment
from zdd.errors import BadInput
from zdd.phases import Mode
from zdd.sqlite_files import data_digest, files_folder
from zdd.targets.local import LOCAL

pytestmark = pytest.mark.skipif(postgres.bin_dir() is None, reason="PostgreSQL is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[postgres.Server]:
    with postgres.standalone_cluster(tmp_path_factory.mktemp("postgresql")) as found:
        yield found


def _articles(server: postgres.Server, name: str, rows: int) -> None:
    postgres.create_database(server, name)
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE articles (id bigserial PRIMARY KEY, title text NOT NULL)")
        conn.execute(
            "INSERT INTO articles (title) SELECT 'row ' || g FROM generate_series(1, %s) g",
            (rows,),
        )


def test_copy_is_one_moment_of_a_primary_that_keeps_writing(
    server: postgres.Server, tmp_path: Path
) -> None:
    _articles(server, "busy_g1", 200_000)
    stop = threading.Event()
    slowest = 0.0

    def write() -> None:
        nonlocal slowest
        with psycopg.connect(server.url("busy_g1"), autocommit=True) as conn:
            while not stop.is_set():
                started = time.monotonic()
                conn.execute("INSERT INTO articles (title) VALUES ('during the copy')")
                slowest = max(slowest, time.monotonic() - started)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        with postgres.standalone_copy(server, "busy_g1", tmp_path / "copy") as copy:
            time.sleep(0.2)
            stop.set()
            writer.join()
            with psycopg.connect(copy.url("busy_g1", read_only=True)) as conn:
                row = conn.execute("SELECT count(*), max(id) FROM articles").fetchone()
                count, highest = row or (0, 0)
    finally:
        stop.set()
        writer.join()
    with psycopg.connect(server.url("busy_g1")) as conn:
        (later,) = conn.execute("SELECT count(*) FROM articles").fetchone() or (0,)
    # One moment: every row up to the newest it holds, none after it, and the primary went on.
    assert count == highest and count > 200_000
    assert later > count
    # The writer was never held up by the copy.
    assert slowest < 1.0


def test_a_write_reaching_the_read_only_clone_is_refused_by_the_server(
    server: postgres.Server, tmp_path: Path
) -> None:
    _articles(server, "ro_g1", 10)
    with postgres.standalone_copy(server, "ro_g1", tmp_path / "copy") as copy:
        with psycopg.connect(copy.url("ro_g1", read_only=True), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM articles").fetchone() == (10,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO articles (title) VALUES ('refused')")
            # Even a session that turns the read-only default off: the copy is a hot standby.
            conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO articles (title) VALUES ('refused')")
        # The owner's role, by a site that kept the primary's URL: refused too.
        with (
            psycopg.connect(copy.url("ro_g1"), autocommit=True) as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            conn.execute("DELETE FROM articles")
        # The copy holds what the primary held, as the server's digest proves.
        assert postgres.content_digest(copy, "ro_g1") == postgres.content_digest(server, "ro_g1")
    # The reader cannot reach the primary at all.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url("ro_g1", read_only=True)).close()


def test_the_driver_checks_the_read_only_clone_on_its_own_cluster(
    server: postgres.Server, tmp_path: Path
) -> None:
    _articles(server, "chk_g1", 10)
    env = Environment(tmp_path)
    files = postgres.files_of(env.stack_dir("site"), "clone_g1")
    files.mkdir(parents=True)
    (files / "upload.txt").write_text("as copied")
    with postgres.standalone_copy(server, "chk_g1", tmp_path / "copy") as copy:
        outputs = {
            "mode": str(Mode.READ_ONLY),
            "clone_database": "clone_g1",
            "clone_database_digest": postgres.site_data_digest(copy, "chk_g1", files),
            "clone_database_server": {
                **{key: getattr(copy, key) for key in _SERVER_KEYS},
                "bin_dir": str(copy.bin_dir),
                "database": "chk_g1",
            },
        }
        assert LOCAL.read_only_violation is not None
        assert LOCAL.read_only_violation(env, "site", outputs) is None
        (files / "upload.txt").write_text("written by the clone")
        found = LOCAL.read_only_violation(env, "site", outputs)
        assert found is not None and "read-only violation" in found


_SERVER_KEYS = ("port", "admin_password", "site_password", "reader_password")


def test_a_restore_point_restores_exactly_what_its_digest_proves(
    server: postgres.Server, tmp_path: Path
) -> None:
    _articles(server, "rp_g1", 1_000)
    before = postgres.content_digest(server, "rp_g1")
    dump = tmp_path / postgres.restore_point_file_name("2026-01-01T00:00:00Z")
    files = tmp_path / "files"
    (files / "uploads").mkdir(parents=True)
    (files / "uploads" / "a.txt").write_text("a file")
    proof = postgres.restore_point(server, "rp_g1", dump, files)
    # The proof taken as the dump was written is what a later check reads back from its bytes.
    assert proof == data_digest(dump)
    assert (files_folder(dump) / "uploads" / "a.txt").read_text() == "a file"
    with psycopg.connect(server.url("rp_g1"), autocommit=True) as conn:
        conn.execute("ALTER TABLE articles ADD COLUMN summary text")
        conn.execute("UPDATE articles SET title = title || '!' WHERE id < 10")
    assert postgres.content_digest(server, "rp_g1") != before
    postgres.restore_database(server, dump, "rp_g2")
    assert postgres.content_digest(server, "rp_g2") == before
    # The dump is kept read-only on disk.
    assert dump.stat().st_mode & 0o222 == 0


def test_the_digest_sees_a_changed_row_and_not_the_storage_order(
    server: postgres.Server,
) -> None:
    _articles(server, "dg_a", 100)
    _articles(server, "dg_b", 100)
    with psycopg.connect(server.url("dg_b"), autocommit=True) as conn:
        # Same rows, other physical order.
        conn.execute("UPDATE articles SET title = title WHERE id % 2 = 0")
    assert postgres.content_digest(server, "dg_a") == postgres.content_digest(server, "dg_b")
    with psycopg.connect(server.url("dg_b"), autocommit=True) as conn:
        conn.execute("UPDATE articles SET title = 'changed' WHERE id = 50")
    assert postgres.content_digest(server, "dg_a") != postgres.content_digest(server, "dg_b")


def test_the_engine_is_read_from_the_app_spec() -> None:
    base = {"releases": "/r/{version}", "start": ["bin/site"]}
    assert appspec.from_document(base, None).engine is appspec.DatabaseEngine.SQLITE
    spec = appspec.from_document({**base, "database": {"engine": "postgresql"}}, None)
    assert spec.engine is appspec.DatabaseEngine.POSTGRESQL
    assert appspec.from_config({"app": spec.to_config()}) == spec
    # A SQLite site's stored spec is what it was before engines existed.
    assert "database" not in appspec.from_document(base, None).to_config()
    with pytest.raises(BadInput, match=r"database\.engine"):
        appspec.from_document({**base, "database": {"engine": "mysql"}}, None)
    with pytest.raises(BadInput, match=r"database\.size"):
        appspec.from_document({**base, "database": {"size": 1}}, None)


def test_a_stack_keeps_its_database_engine() -> None:
    base = {"releases": "/r/{version}", "start": ["bin/site"]}
    sqlite = appspec.from_document(base, None)
    server = appspec.from_document({**base, "database": {"engine": "postgresql"}}, None)
    appspec.check_same_engine(None, server)
    appspec.check_same_engine(server, server)
    with pytest.raises(BadInput, match="keeps its database engine"):
        appspec.check_same_engine(sqlite, server)


def test_missing_server_programs_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(postgres.BIN_DIR_VARIABLE, str(tmp_path))
    assert postgres.bin_dir() is None
    with pytest.raises(postgres.PostgresMissing, match="make setup"):
        postgres.require_bin_dir()
