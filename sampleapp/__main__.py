"""`python -m sampleapp serve|migrate|releases`: what the sample's app spec runs, and its build.

`releases DIR` makes one release folder per version under DIR, as a site's build would; each
holds `bin/sampleapp`, which runs this code as that version (`apps/sample/app.yaml` starts it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from sampleapp import db
from sampleapp.app import Settings, create_app
from sampleapp.versions import VERSIONS, resolve

LAUNCHER = """#!{python}
# Release {version} of the sample site, made by `python -m sampleapp releases`.
import sys

from sampleapp.__main__ import main

main([*sys.argv[1:], "--version", "{version}"])
"""


def make_releases(folder: Path) -> None:
    """One release per version: `folder/<version>/bin/sampleapp` (rewritten only if it differs)."""
    for version in VERSIONS:
        launcher = folder / version / "bin" / "sampleapp"
        content = LAUNCHER.format(python=sys.executable, version=version)
        if not launcher.exists() or launcher.read_text() != content:
            launcher.parent.mkdir(parents=True, exist_ok=True)
            launcher.write_text(content)
            launcher.chmod(0o755)


# A server's URL holds a password: it comes in the environment, never on the command line,
# which every user of the machine can read.
DATABASE_URL_VARIABLE = "DATABASE_URL"
DATABASE_HELP = (
    f"the SQLite file; without it, the database server's URL in ${DATABASE_URL_VARIABLE}"
)


def _database(parser: argparse.ArgumentParser, path: Path | None) -> db.Database:
    if path is not None:
        return path
    url = os.environ.get(DATABASE_URL_VARIABLE)
    if not url:
        parser.error(f"give --database FILE or set {DATABASE_URL_VARIABLE}")
    return url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sampleapp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve one web app instance")
    serve.add_argument("--version", required=True)
    serve.add_argument("--instance", choices=["primary", "clone"], required=True)
    serve.add_argument("--database-mode", choices=["ReadWrite", "ReadOnly"], required=True)
    serve.add_argument("--database", type=Path, help=DATABASE_HELP)
    serve.add_argument("--port", type=int, required=True)
    migrate = sub.add_parser("migrate", help="migrate a database to what a version needs")
    migrate.add_argument("--version", required=True)
    migrate.add_argument("--database", type=Path, help=DATABASE_HELP)
    releases = sub.add_parser("releases", help="make a release folder per version")
    releases.add_argument("folder", type=Path)
    args = parser.parse_args(argv)

    if args.command == "releases":
        make_releases(args.folder)
        return
    version = resolve(args.version)
    database = _database(parser, args.database)
    if args.command == "migrate":
        db.migrate(database, version.schema_revision)
        return
    app = create_app(Settings(version, args.instance, args.database_mode, database))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than the front door keeps an idle connection to it: HAProxy closes first. A
        # site that closed first could do so just as HAProxy sends a write on that connection,
        # which HAProxy cannot retry and passes on to the visitor as a dropped connection.
        timeout_keep_alive=75,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
