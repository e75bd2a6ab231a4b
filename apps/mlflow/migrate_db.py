"""The MLflow releases' migrate hook: `mlflow db upgrade` on the database at the given path.

`mlflow db upgrade` refuses a database without tables, and `mlflow server` creates them at the
newest schema itself on its first start; so a new, empty database is left as it is.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path


def main(database: str) -> None:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        empty = connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
    if not empty:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        os.execv(mlflow, [mlflow, "db", "upgrade", f"sqlite:///{database}"])


if __name__ == "__main__":
    main(sys.argv[1])
