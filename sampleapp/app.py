"""The sample site's web app (Starlette), one process per web app instance."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sampleapp import db
from sampleapp.versions import SiteVersion

T = TypeVar("T")
READ_ONLY = "ReadOnly"
# Answers who answered (version, instance, database mode), for tests and people.
IDENTITY_PATH = "/__identity"
# How long a refused writer should wait: a deployment's read-only window is well under this.
RETRY_AFTER_SECONDS = 30
PAGE_COLUMNS = ("slug", "title", "body")


@dataclass(frozen=True)
class Settings:
    version: SiteVersion
    instance: str  # "primary" or "clone"
    database_mode: str  # "ReadWrite" or "ReadOnly"
    database: db.Database

    @property
    def read_only(self) -> bool:
        return self.database_mode == READ_ONLY


def create_app(settings: Settings) -> Starlette:
    engine = db.open_engine(settings.database, read_only=settings.read_only)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    return Starlette(
        routes=_Site(settings, engine).routes(),
        middleware=[Middleware(_IdentityHeaders, settings=settings)],
        lifespan=lifespan,
    )


class _Site:
    """The handlers of one web app instance, over its engine and the columns its version reads."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.text_col = settings.version.text_column
        self.extras = settings.version.extra_columns
        self.article_columns = ("id", "title", self.text_col, "updated_at", *self.extras)
        # Columns read back with every article (`summary` is only ever written).
        self.shown = "".join(f", {c}" for c in self.extras if c != "summary")
        self.identity = {
            "version": settings.version.name,
            "instance": settings.instance,
            "database_mode": settings.database_mode,
        }
        # A server's commit waits for its disk: writes run in worker threads, many at once (the
        # server commits them together), never one at a time on the event loop. A SQLite file
        # takes one writer at a time anyway and is written on the loop, as it always was.
        self.on_server = engine.dialect.name == "postgresql"

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/healthz", self.healthz),
            Route(IDENTITY_PATH, self.whoami),
            Route("/api/articles", self.list_articles, methods=["GET"]),
            Route("/api/articles", self.create_article, methods=["POST"]),
            Route("/api/articles/titles", self.titles),
            Route("/api/articles/{id:int}", self.get_article, methods=["GET"]),
            Route("/api/articles/{id:int}", self.update_article, methods=["PUT"]),
        ]

    async def _write_off_the_loop(self, work: Callable[[], T]) -> T:
        return await run_in_threadpool(work) if self.on_server else work()

    def _article_row(self, row: Any) -> dict[str, Any]:
        fields = {"id": row.id, "title": row.title, "text": row.text, "updated_at": row.updated_at}
        return {**fields, **{c: getattr(row, c) for c in self.extras if c != "summary"}}

    def healthz(self, _: Request) -> Response:
        identity = self.identity
        if not self.settings.version.healthy:
            return JSONResponse({"status": "failing", **identity}, status_code=500)
        # The code runs wherever every column it uses is there: on its own schema and on one
        # that only added to it, never on one that renamed or dropped what it reads.
        wanted = {"articles": self.article_columns, "pages": PAGE_COLUMNS}
        if db.has_columns(self.engine, wanted):
            return JSONResponse({"status": "ok", **identity})
        # Not so, or no answer: which, read from the catalog.
        try:
            revision = db.current_revision(self.engine)
        except Exception as exc:
            return JSONResponse({"status": "database-error", "detail": str(exc)}, status_code=500)
        missing = db.missing_columns(self.engine, wanted)
        if missing:
            return JSONResponse(
                {
                    "status": "schema-mismatch",
                    "expected": self.settings.version.schema_revision,
                    "found": revision,
                    "missing": missing,
                    **identity,
                },
                status_code=500,
            )
        return JSONResponse({"status": "ok", **identity})

    def whoami(self, _: Request) -> Response:
        return JSONResponse(self.identity)

    def list_articles(self, request: Request) -> Response:
        title = request.query_params.get("title")
        query = f"SELECT id, title, {self.text_col} AS text, updated_at{self.shown} FROM articles"
        params: dict[str, Any] = {}
        if title is not None:
            query += " WHERE title = :title"
            params["title"] = title
        limit = int(request.query_params.get("limit", "1000000"))
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(query + " ORDER BY id LIMIT :limit"), {**params, "limit": limit}
            )
            return JSONResponse([self._article_row(r) for r in rows])

    def titles(self, _: Request) -> Response:
        with self.engine.connect() as conn:
            return JSONResponse([r[0] for r in conn.execute(text("SELECT title FROM articles"))])

    def get_article(self, request: Request) -> Response:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    f"SELECT id, title, {self.text_col} AS text, updated_at{self.shown} "
                    "FROM articles WHERE id = :id"
                ),
                {"id": request.path_params["id"]},
            ).first()
        if row is None:
            return JSONResponse({"error": "not-found"}, status_code=404)
        return JSONResponse(self._article_row(row))

    async def create_article(self, request: Request) -> Response:
        if self.settings.read_only:
            return _refuse_write()
        payload = await request.json()
        statement = text(self._insert_statement())

        def insert() -> Any:
            with self.engine.begin() as conn:
                result = conn.execute(
                    statement,
                    {
                        "title": payload["title"],
                        "text": payload.get("text", ""),
                        "now": time.time(),
                        "author": payload.get("author"),
                    },
                )
                # PostgreSQL's drivers have no last row id: the server says it.
                return result.scalar_one() if self.on_server else result.lastrowid

        new_id = await self._write_off_the_loop(insert)
        return JSONResponse({"id": new_id, "title": payload["title"]}, status_code=201)

    def _insert_statement(self) -> str:
        """A new article, with the columns this version writes besides its text."""
        columns = f"title, {self.text_col}, updated_at"
        values = ":title, :text, :now"
        if "summary" in self.extras:
            columns += ", summary"
            values += ", substr(:text, 1, 80)"
        if "author" in self.extras:
            columns += ", author"
            values += ", :author"
        returning = " RETURNING id" if self.on_server else ""
        return f"INSERT INTO articles ({columns}) VALUES ({values}){returning}"

    async def update_article(self, request: Request) -> Response:
        if self.settings.read_only:
            return _refuse_write()
        payload = await request.json()

        def update() -> int:
            with self.engine.begin() as conn:
                result = conn.execute(
                    text(
                        f"UPDATE articles SET {self.text_col} = :text, updated_at = :now "
                        "WHERE id = :id"
                    ),
                    {
                        "text": payload.get("text", ""),
                        "now": time.time(),
                        "id": request.path_params["id"],
                    },
                )
                return int(result.rowcount)

        if await self._write_off_the_loop(update) == 0:
            return JSONResponse({"error": "not-found"}, status_code=404)
        return JSONResponse({"id": request.path_params["id"]})

    def home(self, _: Request) -> Response:
        settings = self.settings
        with self.engine.connect() as conn:
            page = conn.execute(text("SELECT title, body FROM pages WHERE slug = 'home'")).one()
            rows = conn.execute(
                text(
                    f"SELECT id, title, {self.text_col} AS text FROM articles "
                    "ORDER BY id DESC LIMIT 20"
                )
            ).all()
        notice = (
            "<p class='notice'>The site is read-only for a few moments while it is updated.</p>"
            if settings.read_only
            else ""
        )
        items = "".join(
            f"<li><a href='/articles/{r.id}'>{html.escape(r.title)}</a></li>" for r in rows
        )
        return HTMLResponse(
            f"<!doctype html><title>{html.escape(page.title)}</title>{notice}"
            f"<h1>{html.escape(page.title)}</h1><p>{html.escape(page.body)}</p><ul>{items}</ul>"
            f"<footer>version {settings.version.name} ({settings.instance})</footer>"
        )


def _refuse_write() -> Response:
    return JSONResponse(
        {"error": "read-only", "detail": "the site is read-only during a deployment"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class _IdentityHeaders(BaseHTTPMiddleware):
    """Every answer says who gave it (version, instance, database mode)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-ZDD-Version"] = self.settings.version.name
        response.headers["X-ZDD-Instance"] = self.settings.instance
        response.headers["X-ZDD-Database-Mode"] = self.settings.database_mode
        return response
