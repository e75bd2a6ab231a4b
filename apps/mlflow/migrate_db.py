"""The MLflow releases' migrate hook: `mlflow db upgrade` on the site's database.

The database is the SQLite file named by the argument or, without one, the URL in
`MLFLOW_BACKEND_STORE_URI` (a PostgreSQL site: its URL carries a password, so it comes in the
environment, never on a command line other users can read).

`mlflow db upgrade` refuses a database without tables, and `mlflow server` creates them at the
newest schema itself on its first start; so a new, empty database is left as it is.
"""

from __future__ import annotations

import os
import sqlite3
import sys


def main(argv: list[str]) -> None:
    if argv:
        database = argv[0]
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            empty = connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
        url = f"sqlite:///{database}"
    else:
        import sqlalchemy

        url = os.environ["MLFLOW_BACKEND_STORE_URI"]
        engine = sqlalchemy.create_engine(url)
        try:
            empty = not sqlalchemy.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    if not empty:
        from mlflow.db import commands

        commands.main(["upgrade", url], prog_name="mlflow db")  # exits with its status


if __name__ == "__main__":
    main(sys.argv[1:])
