"""Release folders of the third-party sites the tests deploy: one virtual environment per
version, built once and kept under
`${XDG_CACHE_HOME:-~/.cache}/smooth-deploy/apps/<app>/<version>-<inputs digest>`, linked from
`apps/<app>/releases/<version>` (where each app spec's `releases` looks).

A release whose stamp names its version and the digest of what it was built from (pins, hooks,
project files) is reused; any other (an interrupted build, a changed input) is built again from
scratch. Each app's `build_releases.py` says what goes into a release (`Recipe`)."""

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STAMP = "smooth-deploy-release.json"


class BuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Release:
    version: str
    path: Path  # the link the app spec's `releases` template names
    seconds: float
    reused: bool


@dataclass(frozen=True)
class Recipe:
    """What one app's releases are made of."""

    name: str  # the package, as people call it (`mlflow`, `django-cms`)
    folder: Path  # apps/<app>, whose `releases/` holds the links
    versions: tuple[str, ...]  # the ones the tests deploy
    inputs: Callable[[], list[Path]]  # the files besides the packages (in its folder)
    # Fills a fresh virtual environment at `folder` with `version`: (version, folder, python).
    install: Callable[[str, Path, str], None]

    @property
    def cache(self) -> Path:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "smooth-deploy" / "apps" / self.folder.name


def build(recipe: Recipe, version: str) -> Release:
    """The release of `version`, built unless the cache holds a complete one."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise BuildFailed(f"{version!r} is not a {recipe.name} release number such as 1.2.3")
    started = time.monotonic()
    stamp = {"version": version, "inputs": _digest(recipe.folder, recipe.inputs())}
    # One folder per version and inputs: a checkout with other pins or hooks (another branch)
    # builds beside this one instead of replacing a release that its tests may be running.
    folder = recipe.cache / f"{version}-{stamp['inputs'][:12]}"
    with _locked(recipe.cache / f"{folder.name}.lock"):
        reused = _read_stamp(folder) == stamp
        if not reused:
            shutil.rmtree(folder, ignore_errors=True)
            # A virtual environment cannot be moved (its scripts name their interpreter by
            # path), so it is built in place and only the stamp, written last, makes it a
            # release.
            run([sys.executable, "-m", "venv", str(folder)])
            recipe.install(version, folder, str(folder / "bin" / "python"))
            (folder / STAMP).write_text(json.dumps(stamp))
    link = recipe.folder / "releases" / version
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink() or link.readlink() != folder:
        link.unlink(missing_ok=True)
        link.symlink_to(folder)
    return Release(version, link, time.monotonic() - started, reused)


def pip_install(python: str, constraints: Path, *requirements: str) -> None:
    """Packages from the package index only, every version pinned by `constraints`."""
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    run([*pip, "--constraint", str(constraints), *requirements])


def run(argv: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise BuildFailed(f"{' '.join(argv)} failed ({result.returncode}):\n" + "\n".join(output))


def _digest(folder: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(folder)}\0".encode())
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


def main(recipe: Recipe, versions: Sequence[str]) -> int:
    for version in versions or recipe.versions:
        try:
            release = build(recipe, version)
        except BuildFailed as exc:
            print(f"{recipe.name} {version}: {exc}", file=sys.stderr)
            return 1
        how = "reused" if release.reused else "built"
        print(
            f"{recipe.name} {version}: {how} in {release.seconds:.1f}s -> {release.path.resolve()}"
        )
    return 0
