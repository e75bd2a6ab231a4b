"""A stack's PostgreSQL, on a real server the tests start and stop: the clone's copy (a cluster
of its own) is consistent while the primary writes and does not hold it up, a write reaching the
read-only clone is refused by the server itself, a change to it is what the driver's check finds,
a restore point restores exactly what it proved into a new database, and a restore point changed
or gone is what the driver's check finds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.commands import processes_naming
from tests.helpers.restore_points import append, flip_bytes_of_a_table
from zdd import appspec, postgres
from zdd.environment import Environment
from zdd.errors import BadInput
from zdd.phases import Mode, RestorePointTaken
from zdd.sqlite_files import files_folder
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


def _restore_point_of(
    server: postgres.Server, name: str, rows: int, folder: Path
) -> tuple[str, Path, str]:
    """Database `name` with `rows` articles: its content digest, then a restore point of it
    (with a files folder) in `folder`, as a stack keeps it, and its proof."""
    _articles(server, name, rows)
    before = postgres.content_digest(server, name)
    point = folder / postgres.restore_point_folder_name("2026-01-01T00:00:00Z")
    files = folder / "files"
    (files / "uploads").mkdir(parents=True)
    (files / "uploads" / "a.txt").write_text("a file")
    return before, point, postgres.restore_point(server, name, point, files)


def test_a_restore_point_restores_exactly_what_its_digest_proves(
    server: postgres.Server, tmp_path: Path
) -> None:
    before, point, proof = _restore_point_of(server, "rp_g1", 1_000, tmp_path)
    # The proof taken with the backup is what a later check reads back from the point.
    assert proof == postgres.restore_point_digest(point)
    assert postgres.restore_point_problem(point, proof, server.bin_dir) is None
    assert (files_folder(point) / "uploads" / "a.txt").read_text() == "a file"
    # The live database moves on: a migration, and a row written after the point.
    with psycopg.connect(server.url("rp_g1"), autocommit=True) as conn:
        conn.execute("ALTER TABLE articles ADD COLUMN summary text")
        conn.execute("UPDATE articles SET title = title || '!' WHERE id < 10")
        conn.execute("INSERT INTO articles (title) VALUES ('after the restore point')")
    assert postgres.content_digest(server, "rp_g1") != before
    # Restored twice (a repeated rollback): each time what the point held, never the live
    # database, into the new database only; the point itself is unchanged by a restore.
    for new in ("rp_g2", "rp_g3"):
        postgres.restore_database(server, point, new)
        assert postgres.content_digest(server, new) == before
        assert postgres.restore_point_problem(point, proof, server.bin_dir) is None
    with psycopg.connect(server.url("rp_g1")) as conn:
        assert conn.execute("SELECT count(*) FROM articles").fetchone() == (1_001,)
    # The restore's scratch server and folder are gone; the point is read-only on disk.
    scratch = postgres.restore_scratch_dir(tmp_path)
    assert not scratch.exists()
    assert not processes_naming(scratch)
    assert all(path.stat().st_mode & 0o222 == 0 for path in (point, *point.rglob("*")))
    postgres.remove_restore_point(point)
    assert not point.exists() and not files_folder(point).exists()


def test_a_restore_left_halfway_is_started_again_from_the_restore_point(
    server: postgres.Server, tmp_path: Path
) -> None:
    before, point, proof = _restore_point_of(server, "half_g1", 100, tmp_path)
    # A restore killed with its scratch server running: the next one stops it and starts over.
    scratch = postgres.restore_scratch_dir(tmp_path)
    with postgres.standalone_copy(server, "half_g1", scratch):
        postgres.restore_database(server, point, "half_g2")
    assert postgres.content_digest(server, "half_g2") == before
    assert not scratch.exists()
    assert postgres.restore_point_problem(point, proof, server.bin_dir) is None


@pytest.mark.parametrize(
    "tamper",
    ["table file", "manifest", "wal", "database name", "files folder", "extra file", "gone"],
)
def test_the_driver_refuses_a_changed_or_removed_restore_point(
    tamper: str, server: postgres.Server, tmp_path: Path
) -> None:
    name = f"tamper_{tamper.replace(' ', '_')}_g1"
    env = Environment(tmp_path)
    stack = env.stack_dir("site")
    postgres.data_dir(stack).mkdir(parents=True)  # a stack on PostgreSQL
    taken_at = "2026-01-01T00:00:00Z"
    _before, point, proof = _restore_point_of(server, name, 20_000, stack)
    taken = RestorePointTaken(taken_at, 0.0, proof)
    assert LOCAL.restore_point_problem is not None
    assert LOCAL.restore_point_problem(env, "site", taken) is None
    data = point / "data"
    if tamper == "table file":
        flip_bytes_of_a_table(point)
    elif tamper == "manifest":
        append(data / "backup_manifest", " ")
    elif tamper == "wal":
        wal = next(p for p in sorted((data / "pg_wal").iterdir()) if p.is_file())
        wal.parent.chmod(0o700)
        wal.chmod(0o600)
        with open(wal, "r+b") as handle:
            handle.seek(200)
            handle.write(b"\x00\x01")
    elif tamper == "database name":
        append(point / "database", "x")
    elif tamper == "files folder":
        (files_folder(point) / "planted.txt").write_text("not the site's")
    elif tamper == "extra file":
        append(data / "base" / "planted", "x")
    else:
        postgres.remove_restore_point(point)
    found = LOCAL.restore_point_problem(env, "site", taken)
    assert found is not None
    wanted = "is gone" if tamper == "gone" else "no longer holds what it held when taken"
    assert wanted in found, found


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
