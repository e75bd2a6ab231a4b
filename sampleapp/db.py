"""Database access for the sample site: SQLite or PostgreSQL through SQLAlchemy, schema through
Alembic. A database is a SQLite file's path or a server's URL (`postgresql://...`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

# Alembic is imported where a schema is read or changed, not here: a server never migrates, and
# importing it took a third of a server's start.
if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


# What names a database: a SQLite file, or a database server's URL.
Database = Path | str


def url_for(path: Database, *, read_only: bool = False) -> str:
    if isinstance(path, str):
        # A server's URL: a read-only clone's role and database refuse writes themselves.
        return path
    # A read-only connection makes the ReadOnly promise physical: the clone cannot write.
    if read_only:
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return f"sqlite:///{path}"


def open_engine(path: Database, *, read_only: bool = False) -> Engine:
    if isinstance(path, str):
        # Pre-ping: a connection kept from before a server restart is replaced, not failed.
        return create_engine(path, pool_size=8, max_overflow=8, pool_pre_ping=True)
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


def alembic_config(path: Database) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url_for(path))
    return config


def migrate(path: Database, revision: str) -> None:
    """Bring the database at `path` to `revision` (creating a SQLite file if needed)."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(path), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def has_columns(engine: Engine, wanted: Mapping[str, Sequence[str]]) -> bool:
    """Whether the database has every wanted column: one empty SELECT per table, without the
    catalog reads of `missing_columns` (a front door checks health twice a second)."""
    quote = engine.dialect.identifier_preparer.quote
    try:
        with engine.connect() as connection:
            for table, columns in wanted.items():
                selected = ", ".join(quote(column) for column in columns)
                connection.execute(text(f"SELECT {selected} FROM {quote(table)} WHERE 1 = 0"))
    except DBAPIError:
        return False
    return True


def missing_columns(engine: Engine, wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """`table.column` for each wanted column the database does not have."""
    found = inspect(engine)
    tables = set(found.get_table_names())
    missing = []
    for table, columns in wanted.items():
        have = {c["name"] for c in found.get_columns(table)} if table in tables else set()
        missing += [f"{table}.{column}" for column in columns if column not in have]
    return missing
