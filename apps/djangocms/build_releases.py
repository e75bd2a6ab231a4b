"""Builds the django CMS site's release folders, one per django-cms version, cached between runs
(apps/release_cache.py).

A release is a virtual environment with django-cms installed at that version plus the project's
own requirements (`site/requirements.txt`; every version pinned by `constraints.txt`), a copy of
the project (`site/`: manage.py, the `mysite` settings and URLs, the `newsletter` app) and its
static files, collected at build time. A changed pin or project file makes a new build.

    python -m apps.djangocms.build_releases [VERSION ...]   # default: the versions the test deploys
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from apps.release_cache import Recipe, main, pip_install, run

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"
# What the build leaves out of the project's copy: bytecode and a development run's files.
LEFT_OUT = ("__pycache__", "*.pyc", "db.sqlite3", "media", "static")


def inputs() -> list[Path]:
    """The files a release is made of besides the packages: the pins and the project."""
    ignored = shutil.ignore_patterns(*LEFT_OUT)
    found: list[Path] = []
    for folder, subfolders, files in os.walk(SITE):
        skipped = ignored(folder, subfolders + files)
        subfolders[:] = sorted(name for name in subfolders if name not in skipped)
        found += [Path(folder) / name for name in sorted(files) if name not in skipped]
    return [HERE / "constraints.txt", *found]


def _install(version: str, folder: Path, python: str) -> None:
    requirements = ("--requirement", str(SITE / "requirements.txt"))
    pip_install(python, HERE / "constraints.txt", f"django-cms=={version}", *requirements)
    shutil.copytree(SITE, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    # Static files belong to the release (they differ between django CMS versions); WhiteNoise
    # serves them from `static/` in the release folder.
    run([python, str(folder / "manage.py"), "collectstatic", "--noinput"], cwd=folder)


RECIPE = Recipe(
    name="django-cms",
    folder=HERE,
    # 5.0.13 runs the cms schema up to migration 0041; 5.1.3 brings 0042 (drops the static
    # placeholder model), 0043 (page permission fields), 0044 (a page content's own slug and URL,
    # which rebuilds the cms_pagecontent table on SQLite) and 0045 (unique page paths per site).
    versions=("5.0.13", "5.1.3"),
    inputs=inputs,
    install=_install,
)

if __name__ == "__main__":
    sys.exit(main(RECIPE, sys.argv[1:]))
