"""v1: pages and articles, with sample content."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_PAGES = [
    ("home", "Welcome", "A small content site, shipped without a maintenance page."),
    ("about", "About", "Articles are written by editors and read by everyone."),
]


def upgrade() -> None:
    pages = op.create_table(
        "pages",
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    articles = op.create_table(
        "articles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False, index=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.bulk_insert(pages, [{"slug": s, "title": t, "body": b} for s, t, b in _PAGES])
    op.bulk_insert(
        articles,
        [
            {
                "title": f"Sample article {n}",
                "body": f"Text of sample article {n}.",
                "updated_at": 0.0,
            }
            for n in range(1, 11)
        ],
    )
