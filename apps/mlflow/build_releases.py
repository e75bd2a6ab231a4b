"""Builds the MLflow tracking server's release folders, one per version, cached between runs.

A release is a virtual environment with MLflow installed at that version (dependencies pinned by
`constraints.txt`, packages from the package index only) plus the migrate hook `migrate_db.py`,
kept under `${XDG_CACHE_HOME:-~/.cache}/smooth-deploy/apps/mlflow/<version>`;
`apps/mlflow/releases/<version>` links to it, which is where `app.yaml` looks. A release whose
stamp names its version and the digest of the pins and hook it was built with is reused; any
other (an interrupted build, changed pins) is built again from scratch.

    python apps/mlflow/build_releases.py [VERSION ...]   # default: the versions the test deploys
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

# The older release runs schema 4465047574b1; 2.17.2 migrates to f5a4f2784254 (run tag values
# up to 8000 characters) and each refuses to start on the other's schema.
VERSIONS = ("2.16.2", "2.17.2")
HERE = Path(__file__).resolve().parent
INPUTS = (HERE / "constraints.txt", HERE / "migrate_db.py")
STAMP = "smooth-deploy-release.json"


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
    return Path(base) / "smooth-deploy" / "apps" / "mlflow"


def build(version: str) -> Release:
    """The release of `version`, built unless the cache holds a complete one."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise BuildFailed(f"{version!r} is not an MLflow release number such as 2.16.2")
    started = time.monotonic()
    folder = cache_root() / version
    stamp = {"version": version, "inputs": _digest(INPUTS)}
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
    _run(
        [
            str(folder / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--constraint",
            str(HERE / "constraints.txt"),
            f"mlflow=={version}",
        ]
    )
    shutil.copyfile(HERE / "migrate_db.py", folder / "migrate_db.py")


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise BuildFailed(f"{' '.join(argv)} failed ({result.returncode}):\n" + "\n".join(output))


def _digest(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
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
            print(f"mlflow {version}: {exc}", file=sys.stderr)
            return 1
        how = "reused" if release.reused else "built"
        print(f"mlflow {version}: {how} in {release.seconds:.1f}s -> {release.path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
