"""A local stack's PostgreSQL as its tests reach it: the servers its outputs describe, and what
its primary database holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.helpers.commands import ROOT, Result
from zdd import postgres

# The sample site's app spec on the stack's own PostgreSQL cluster.
SAMPLE_ON_POSTGRESQL = ROOT / "apps" / "sample" / "app-postgresql.yaml"


def server_of(
    pulumi: Callable[..., Result], name: str, output: str = "database_server"
) -> postgres.Server:
    """The stack's cluster, or with `clone_database_server` the clone's own."""
    outputs = pulumi("stack", "output", "--stack", name, "--json", "--show-secrets").json()
    return postgres.server_from_outputs(outputs[output])


def primary_content(server: postgres.Server, database: str) -> dict[str, Any]:
    """What a test compares before and after: the migration revision, the articles' columns,
    every article, and what the reader role may read, read through the administrator."""
    with server.admin(database) as conn:
        return {
            "revision": conn.execute("SELECT version_num FROM alembic_version").fetchall(),
            "columns": conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'articles' ORDER BY column_name"
            ).fetchall(),
            "articles": conn.execute("SELECT * FROM articles ORDER BY id").fetchall(),
            "reader": conn.execute(
                "SELECT pg_has_role(%s, 'pg_read_all_data', 'MEMBER'), "
                "has_database_privilege(%s, current_database(), 'CONNECT')",
                (postgres.READER_ROLE, postgres.READER_ROLE),
            ).fetchall(),
        }
