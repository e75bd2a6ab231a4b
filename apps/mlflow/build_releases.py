"""Builds the MLflow tracking server's release folders, one per version, cached between runs
(apps/release_cache.py): a virtual environment with MLflow at that version (dependencies pinned
by `constraints.txt`, the PostgreSQL driver psycopg2 among them) plus the migrate hook
`migrate_db.py`.

    python -m apps.mlflow.build_releases [VERSION ...]   # default: the versions the test deploys
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from apps.release_cache import Recipe, main, pip_install

HERE = Path(__file__).resolve().parent


def _install(version: str, folder: Path, python: str) -> None:
    # psycopg2: the driver MLflow's SQLAlchemy 2.0 uses for its PostgreSQL backend store.
    pip_install(python, HERE / "constraints.txt", f"mlflow=={version}", "psycopg2-binary")
    shutil.copyfile(HERE / "migrate_db.py", folder / "migrate_db.py")


RECIPE = Recipe(
    name="mlflow",
    folder=HERE,
    # The older release runs schema 4465047574b1; 2.17.2 migrates to f5a4f2784254 (run tag
    # values up to 8000 characters) and each refuses to start on the other's schema.
    versions=("2.16.2", "2.17.2"),
    inputs=lambda: [HERE / "constraints.txt", HERE / "migrate_db.py"],
    install=_install,
)

if __name__ == "__main__":
    sys.exit(main(RECIPE, sys.argv[1:]))
