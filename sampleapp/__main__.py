"""`python -m sampleapp serve|migrate`: what a web app process and a migration hook run."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from sampleapp import db
from sampleapp.app import Settings, create_app
from sampleapp.versions import resolve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sampleapp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve one web app instance")
    serve.add_argument("--version", required=True)
    serve.add_argument("--instance", choices=["primary", "clone"], required=True)
    serve.add_argument("--database-mode", choices=["ReadWrite", "ReadOnly"], required=True)
    serve.add_argument("--database", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    migrate = sub.add_parser("migrate", help="migrate a database to what a version needs")
    migrate.add_argument("--version", required=True)
    migrate.add_argument("--database", type=Path, required=True)
    args = parser.parse_args(argv)

    version = resolve(args.version)
    if args.command == "migrate":
        db.migrate(args.database, version.schema_revision)
        return
    app = create_app(Settings(version, args.instance, args.database_mode, args.database))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
