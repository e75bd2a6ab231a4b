"""v3-bad-migration: a migration that fails, to prove that a failed migration is recoverable."""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # Refers to a column that does not exist: SQLite refuses the statement.
    op.execute("UPDATE articles SET summary = headline")
