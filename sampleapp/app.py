"""The sample site's web app (Starlette), one process per web app instance."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

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
    text_col = settings.version.text_column
    extras = settings.version.extra_columns
    article_columns = ("id", "title", text_col, "updated_at", *extras)
    # Columns read back with every article (`summary` is only ever written).
    shown = "".join(f", {c}" for c in extras if c != "summary")
    identity = {
        "version": settings.version.name,
        "instance": settings.instance,
        "database_mode": settings.database_mode,
    }

    # A server's commit waits for its disk: writes run in worker threads, many at once (the
    # server commits them together), never one at a time on the event loop. A SQLite file
    # takes one writer at a time anyway and is written on the loop, as it always was.
    on_server = engine.dialect.name == "postgresql"

    async def write_off_the_loop(work: Callable[[], T]) -> T:
        return await run_in_threadpool(work) if on_server else work()

    def refuse_write() -> Response:
        return JSONResponse(
            {"error": "read-only", "detail": "the site is read-only during a deployment"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def article_row(row: Any) -> dict[str, Any]:
        fields = {"id": row.id, "title": row.title, "text": row.text, "updated_at": row.updated_at}
        return {**fields, **{c: getattr(row, c) for c in extras if c != "summary"}}

    def healthz(_: Request) -> Response:
        if not settings.version.healthy:
            return JSONResponse({"status": "failing", **identity}, status_code=500)
        try:
            revision = db.current_revision(engine)
        except Exception as exc:
            return JSONResponse({"status": "database-error", "detail": str(exc)}, status_code=500)
        # The code runs wherever every column it uses is there: on its own schema and on one
        # that only added to it, never on one that renamed or dropped what it reads.
        missing = db.missing_columns(engine, {"articles": article_columns, "pages": PAGE_COLUMNS})
        if missing:
            return JSONResponse(
                {
                    "status": "schema-mismatch",
                    "expected": settings.version.schema_revision,
                    "found": revision,
                    "missing": missing,
                    **identity,
                },
                status_code=500,
            )
        return JSONResponse({"status": "ok", **identity})

    def whoami(_: Request) -> Response:
        return JSONResponse(identity)

    def list_articles(request: Request) -> Response:
        title = request.query_params.get("title")
        query = f"SELECT id, title, {text_col} AS text, updated_at{shown} FROM articles"
        params: dict[str, Any] = {}
        if title is not None:
            query += " WHERE title = :title"
            params["title"] = title
        limit = int(request.query_params.get("limit", "1000000"))
        with engine.connect() as conn:
            rows = conn.execute(
                text(query + " ORDER BY id LIMIT :limit"), {**params, "limit": limit}
            )
            return JSONResponse([article_row(r) for r in rows])

    def titles(_: Request) -> Response:
        with engine.connect() as conn:
            return JSONResponse([r[0] for r in conn.execute(text("SELECT title FROM articles"))])

    def get_article(request: Request) -> Response:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    f"SELECT id, title, {text_col} AS text, updated_at{shown} FROM articles "
                    "WHERE id = :id"
                ),
                {"id": request.path_params["id"]},
            ).first()
        if row is None:
            return JSONResponse({"error": "not-found"}, status_code=404)
        return JSONResponse(article_row(row))

    async def create_article(request: Request) -> Response:
        if settings.read_only:
            return refuse_write()
        payload = await request.json()
        columns = f"title, {text_col}, updated_at"
        values = ":title, :text, :now"
        if "summary" in extras:
            columns += ", summary"
            values += ", substr(:text, 1, 80)"
        if "author" in extras:
            columns += ", author"
            values += ", :author"
        # PostgreSQL's drivers have no last row id: the server says it.
        returning = " RETURNING id" if on_server else ""

        def insert() -> Any:
            with engine.begin() as conn:
                result = conn.execute(
                    text(f"INSERT INTO articles ({columns}) VALUES ({values}){returning}"),
                    {
                        "title": payload["title"],
                        "text": payload.get("text", ""),
                        "now": time.time(),
                        "author": payload.get("author"),
                    },
                )
                return result.scalar_one() if returning else result.lastrowid

        new_id = await write_off_the_loop(insert)
        return JSONResponse({"id": new_id, "title": payload["title"]}, status_code=201)

    async def update_article(request: Request) -> Response:
        if settings.read_only:
            return refuse_write()
        payload = await request.json()

        def update() -> int:
            with engine.begin() as conn:
                result = conn.execute(
                    text(
                        f"UPDATE articles SET {text_col} = :text, updated_at = :now WHERE id = :id"
                    ),
                    {
                        "text": payload.get("text", ""),
                        "now": time.time(),
                        "id": request.path_params["id"],
                    },
                )
                return int(result.rowcount)

        if await write_off_the_loop(update) == 0:
            return JSONResponse({"error": "not-found"}, status_code=404)
        return JSONResponse({"id": request.path_params["id"]})

    def home(_: Request) -> Response:
        with engine.connect() as conn:
            page = conn.execute(text("SELECT title, body FROM pages WHERE slug = 'home'")).one()
            rows = conn.execute(
                text(
                    f"SELECT id, title, {text_col} AS text FROM articles ORDER BY id DESC LIMIT 20"
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

    class IdentityHeaders(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            response.headers["X-ZDD-Version"] = settings.version.name
            response.headers["X-ZDD-Instance"] = settings.instance
            response.headers["X-ZDD-Database-Mode"] = settings.database_mode
            return response

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route(IDENTITY_PATH, whoami),
            Route("/api/articles", list_articles, methods=["GET"]),
            Route("/api/articles", create_article, methods=["POST"]),
            Route("/api/articles/titles", titles),
            Route("/api/articles/{id:int}", get_article, methods=["GET"]),
            Route("/api/articles/{id:int}", update_article, methods=["PUT"]),
        ],
        middleware=[Middleware(IdentityHeaders)],
        lifespan=lifespan,
    )
