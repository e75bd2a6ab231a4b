"""Running `zdd`, the Pulumi CLI and the apps' release builds the way a user would, and
finding what a local stack left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zdd.environment import STATE_ROOT
from zdd.environment import stack_dir as stack_dir_under

ROOT = Path(__file__).resolve().parents[2]
# The probe's rate in tests (`--probe` reads it from ZDD_PROBE_RATE): two tests share the two
# cores of a CI machine, and at the CLI's 400 requests/s each probe took half a core from the
# deployments under test. 100/s still sends a request every 10 ms, a write every 100 ms.
PROBE_RATE = 100.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(argv: list[str], env: dict[str, str], timeout: float = 600, cwd: Path = ROOT) -> Result:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


def stack_dir(name: str) -> Path:
    """Where a local stack's own files live."""
    return stack_dir_under(ROOT / STATE_ROOT, name)


def config_file(name: str) -> Path:
    """A stack's Pulumi config file."""
    return ROOT / "stacks" / f"Pulumi.{name}.yaml"


def processes_naming(folder: Path) -> list[int]:
    """Pids of any user's processes whose command line names `folder` (a database server runs
    as its own OS user, out of reach of the owner ids)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.name.isdigit() and f"{folder}/" in cmdline:
            found.append(int(entry.name))
    return found


def build_releases(app: str, *versions: str) -> None:
    """A real application's releases, built once and cached across sessions
    (apps/<app>/build_releases.py, apps/release_cache.py)."""
    built = subprocess.run(
        [sys.executable, "-m", f"apps.{app}.build_releases", *versions],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    print(built.stdout, end="")


def killed_in(argv: list[str], line: str, env: dict[str, str], pause: float = 0.5) -> None:
    """Run `zdd ARGV` and SIGKILL it `pause` seconds after it says `line`."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "zdd.cli", *argv],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert driver.stderr is not None
    for said in driver.stderr:
        if line in said:
            time.sleep(pause)
            driver.send_signal(signal.SIGKILL)
            break
    driver.wait(timeout=120)
    assert driver.returncode == -signal.SIGKILL, f"never saw {line!r}"
