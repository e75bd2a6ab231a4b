"""Database access for the sample site: SQLite through SQLAlchemy, schema through Alembic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect

MIGRATIONS = Path(__file__).with_name("migrations")


def url_for(path: Path, *, read_only: bool = False) -> str:
    # A read-only connection makes the ReadOnly promise physical: the clone cannot write.
    if read_only:
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return f"sqlite:///{path}"


def open_engine(path: Path, *, read_only: bool = False) -> Engine:
    engine = create_engine(
        url_for(path, read_only=read_only),
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        if not read_only:
            # WAL lets readers carry on while a writer (or an online backup) works.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def alembic_config(path: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url_for(path))
    return config


def migrate(path: Path, revision: str) -> None:
    """Bring the database at `path` to `revision` (creating it if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(path), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def missing_columns(engine: Engine, wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """`table.column` for each wanted column the database does not have."""
    found = inspect(engine)
    tables = set(found.get_table_names())
    missing = []
    for table, columns in wanted.items():
        have = {c["name"] for c in found.get_columns(table)} if table in tables else set()
        missing += [f"{table}.{column}" for column in columns if column not in have]
    return missing
