"""v1.1: a nullable `articles.author`; v1's code reads and writes around it unchanged."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001a"
down_revision = "0001"


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN: no table rebuild, so a live v1 keeps serving meanwhile.
    op.add_column("articles", sa.Column("author", sa.String(200), nullable=True))
