"""Builds the django CMS site's release folders, one per django-cms version, cached between runs.

A release is a virtual environment with django-cms installed at that version plus the project's
own requirements (`site/requirements.txt`; every version pinned by `constraints.txt`, packages
from the package index only), a copy of the project (`site/`: manage.py, the `mysite` settings
and URLs, the `newsletter` app) and its static files, collected at build time. It is kept under
`${XDG_CACHE_HOME:-~/.cache}/smooth-deploy/apps/djangocms/<version>`;
`apps/djangocms/releases/<version>` links to it, which is where `app.yaml` looks. A release whose
stamp names its version and the digest of the pins and the project it was built with is reused;
any other (an interrupted build, a changed pin or project file) is built again from scratch.

    python apps/djangocms/build_releases.py [VERSION ...]   # default: the versions the test deploys
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# 5.0.13 runs the cms schema up to migration 0041; 5.1.3 brings 0042 (drops the static
# placeholder model), 0043 (page permission fields), 0044 (a page content's own slug and URL,
# which rebuilds the cms_pagecontent table on SQLite) and 0045 (unique page paths per site).
VERSIONS = ("5.0.13", "5.1.3")
HERE = Path(__file__).resolve().parent
SITE = HERE / "site"
STAMP = "smooth-deploy-release.json"
# What the build leaves out of the project's copy: bytecode and a development run's files.
LEFT_OUT = ("__pycache__", "*.pyc", "db.sqlite3", "media", "static")


class BuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Release:
    version: str
    path: Path  # the link app.yaml's `releases` template names
    seconds: float
    reused: bool


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smooth-deploy" / "apps" / "djangocms"


def inputs() -> list[Path]:
    """The files a release is made of besides the packages: the pins and the project."""
    ignored = shutil.ignore_patterns(*LEFT_OUT)
    found: list[Path] = []
    for folder, subfolders, files in os.walk(SITE):
        skipped = ignored(folder, subfolders + files)
        subfolders[:] = sorted(name for name in subfolders if name not in skipped)
        found += [Path(folder) / name for name in sorted(files) if name not in skipped]
    return [HERE / "constraints.txt", *found]


def build(version: str) -> Release:
    """The release of `version`, built unless the cache holds a complete one."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise BuildFailed(f"{version!r} is not a django-cms release number such as 5.1.3")
    started = time.monotonic()
    folder = cache_root() / version
    stamp = {"version": version, "inputs": _digest(inputs())}
    with _locked(cache_root() / f"{version}.lock"):
        reused = _read_stamp(folder) == stamp
        if not reused:
            _install(version, folder)
            (folder / STAMP).write_text(json.dumps(stamp))
    link = HERE / "releases" / version
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink() or link.readlink() != folder:
        link.unlink(missing_ok=True)
        link.symlink_to(folder)
    return Release(version, link, time.monotonic() - started, reused)


def _install(version: str, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    # A virtual environment cannot be moved (its scripts name their interpreter by path), so it
    # is built in place and only the stamp, written last, makes it a release.
    _run([sys.executable, "-m", "venv", str(folder)])
    python = str(folder / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    pip += ["--constraint", str(HERE / "constraints.txt")]
    _run([*pip, f"django-cms=={version}", "--requirement", str(SITE / "requirements.txt")])
    shutil.copytree(SITE, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    # Static files belong to the release (they differ between django CMS versions); WhiteNoise
    # serves them from `static/` in the release folder.
    _run([python, str(folder / "manage.py"), "collectstatic", "--noinput"], cwd=folder)


def _run(argv: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise BuildFailed(f"{' '.join(argv)} failed ({result.returncode}):\n" + "\n".join(output))


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(HERE)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _read_stamp(folder: Path) -> object:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build of a version at a time (two test sessions may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(versions: list[str]) -> int:
    for version in versions or VERSIONS:
        try:
            release = build(version)
        except BuildFailed as exc:
            print(f"django-cms {version}: {exc}", file=sys.stderr)
            return 1
        how = "reused" if release.reused else "built"
        print(f"django-cms {version}: {how} in {release.seconds:.1f}s -> {release.path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
