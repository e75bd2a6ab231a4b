"""The site's code versions and the database schema each one needs.

Each version is code that reads and writes the columns of one migration head. `v1.1` only adds
a nullable `articles.author`, so `v1` runs on its schema unchanged (a release a rehearsal proves
compatible). `v2` renames `articles.body` to `articles.content` and adds `summary`, so `v1`
cannot run against a `v2` database: that is the change the clone path exists for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SiteVersion:
    name: str
    # The Alembic revision this version's code expects the database to be at.
    schema_revision: str
    # Whether `/healthz` answers 200 (a deliberately broken release says no).
    healthy: bool = True
    # Column that holds an article's text in this version's schema.
    text_column: str = "content"
    # The other article columns this version's code reads or writes besides id, title and
    # updated_at: its health check finds each of them or reports a schema mismatch.
    extra_columns: tuple[str, ...] = ("summary",)


VERSIONS: dict[str, SiteVersion] = {
    v.name: v
    for v in (
        SiteVersion("v1", schema_revision="0001", text_column="body", extra_columns=()),
        # Adds a nullable column: v1 reads and writes on its schema as before.
        SiteVersion("v1.1", schema_revision="0001a", text_column="body", extra_columns=("author",)),
        SiteVersion("v2", schema_revision="0002"),
        # A fix of v2 on the same schema: what a roll forward after a failed release ships.
        SiteVersion("v2.1", schema_revision="0002"),
        SiteVersion("v3-unhealthy", schema_revision="0002", healthy=False),
        SiteVersion("v3-bad-migration", schema_revision="0003"),
    )
}


class UnknownVersion(LookupError):
    pass


def resolve(name: str) -> SiteVersion:
    try:
        return VERSIONS[name]
    except KeyError:
        known = ", ".join(VERSIONS)
        raise UnknownVersion(f"the sample site has no version {name!r} (known: {known})") from None
