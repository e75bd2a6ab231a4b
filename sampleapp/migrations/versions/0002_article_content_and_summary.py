"""v2: `articles.body` becomes `content`, plus a `summary`; v1's code cannot read this schema."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001a"


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.alter_column("body", new_column_name="content")
        batch.add_column(sa.Column("summary", sa.String(200), nullable=False, server_default=""))
    op.execute("UPDATE articles SET summary = substr(content, 1, 80)")
