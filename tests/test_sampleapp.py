"""The sample site: versions, migrations, ReadOnly mode and health checks (no engine)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sampleapp import db
from sampleapp.app import IDENTITY_PATH, Settings, create_app
from sampleapp.versions import UnknownVersion, resolve


def client(
    path: Path, version: str, mode: str = "ReadWrite", instance: str = "primary"
) -> TestClient:
    return TestClient(create_app(Settings(resolve(version), instance, mode, path)))


@pytest.fixture
def v1_db(tmp_path: Path) -> Path:
    path = tmp_path / "site.sqlite"
    db.migrate(path, resolve("v1").schema_revision)
    return path


def test_v1_serves_sample_content_and_accepts_writes(v1_db: Path) -> None:
    with client(v1_db, "v1") as site:
        assert site.get("/healthz").json()["status"] == "ok"
        assert len(site.get("/api/articles").json()) == 10
        created = site.post("/api/articles", json={"title": "hello", "text": "world"})
        assert created.status_code == 201
        assert site.get("/api/articles", params={"title": "hello"}).json()[0]["text"] == "world"
        assert (
            site.put(f"/api/articles/{created.json()['id']}", json={"text": "x"}).status_code == 200
        )
        page = site.get("/")
        assert page.headers["X-ZDD-Version"] == "v1" and "hello" in page.text


def test_read_only_refuses_writes_with_retry_after_and_keeps_reading(v1_db: Path) -> None:
    with client(v1_db, "v1", mode="ReadOnly", instance="clone") as site:
        refused = site.post("/api/articles", json={"title": "nope"})
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert site.put("/api/articles/1", json={"text": "nope"}).status_code == 503
        assert "read-only" in site.get("/").text
        assert site.get(IDENTITY_PATH).json() == {
            "version": "v1",
            "instance": "clone",
            "database_mode": "ReadOnly",
        }
    titles = [r[0] for r in sqlite3.connect(v1_db).execute("SELECT title FROM articles")]
    assert "nope" not in titles


def test_v2_migration_renames_the_column_so_v1_cannot_run_on_it(v1_db: Path) -> None:
    db.migrate(v1_db, resolve("v2").schema_revision)
    with client(v1_db, "v2") as site:
        assert site.get("/healthz").status_code == 200
        assert site.get("/api/articles/1").json()["text"] == "Text of sample article 1."
    with client(v1_db, "v1") as old:
        health = old.get("/healthz")
        assert health.status_code == 500
        assert health.json()["status"] == "schema-mismatch"


def test_unhealthy_and_bad_migration_versions(v1_db: Path) -> None:
    db.migrate(v1_db, resolve("v2").schema_revision)
    with client(v1_db, "v3-unhealthy") as site:
        assert site.get("/healthz").status_code == 500
        assert site.get("/").status_code == 200  # it serves, but must never get traffic
    with pytest.raises(Exception, match="headline"):
        db.migrate(v1_db, resolve("v3-bad-migration").schema_revision)
    with client(v1_db, "v2") as site:  # the failed migration left the v2 schema usable
        assert site.get("/healthz").status_code == 200


def test_unknown_version() -> None:
    with pytest.raises(UnknownVersion, match=r"known: v1, v1\.1, v2"):
        resolve("v7")


def test_v1_runs_on_the_additive_v1_1_schema_and_v1_1_needs_its_migration(v1_db: Path) -> None:
    with client(v1_db, "v1.1") as early:
        assert early.get("/healthz").json()["missing"] == ["articles.author"]
    db.migrate(v1_db, resolve("v1.1").schema_revision)
    with client(v1_db, "v1") as old:
        assert old.get("/healthz").status_code == 200
        assert old.post("/api/articles", json={"title": "from v1"}).status_code == 201
    with client(v1_db, "v1.1") as new:
        assert new.get("/healthz").status_code == 200
        created = new.post("/api/articles", json={"title": "by", "author": "ann"})
        assert new.get(f"/api/articles/{created.json()['id']}").json()["author"] == "ann"
        assert new.get("/api/articles", params={"title": "from v1"}).json()[0]["author"] is None
    db.migrate(v1_db, resolve("v2").schema_revision)  # v2's chain holds v1.1's migration
    with client(v1_db, "v2") as v2:
        assert v2.get("/healthz").status_code == 200
