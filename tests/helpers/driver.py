"""The `zdd` driver as a background process a test can watch and kill at a known step, and
what a test compares to show that a command changed nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.commands import ROOT, Result, config_file


def paused_for_approval(
    zdd: Callable[..., Result], stack: str, version: str, *options: str
) -> Result:
    """`zdd deploy --wait-for-approval --yes --json`, which must stop awaiting approval."""
    paused = zdd(
        "deploy", "-s", stack, "--version", version, "--wait-for-approval", "--yes", "--json",
        *options,
    )  # fmt: skip
    assert paused.code == 0, paused.stderr
    assert paused.json()["outcome"] == "awaiting-approval", paused.stdout
    return paused


def read_write_deployment(
    zdd: Callable[..., Result], stack: str
) -> tuple[dict[str, Any], set[str]]:
    """`zdd deploy --mode read-write --accept-data-loss --probe` to v2, which must fail no
    request and report exactly the rows the probe wrote while the clone held the traffic (the
    only writes missing from the primary): its `lost_writes` and those titles."""
    result = zdd(
        "deploy", "-s", stack, "--version", "v2", "--mode", "read-write", "--accept-data-loss",
        "--probe", "--yes", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.json()
    probe, lost = report["probe"], report["lost_writes"]
    assert probe["failed"] == 0 and probe["writes_refused"] == 0
    added = lost["tables"]["articles"]["added"]
    assert probe["writes_lost"] == len(added) == lost["rows"] > 0
    taken = {row["title"] for row in added}
    assert taken == set(probe["lost_titles"])
    assert "NOT in the primary" in result.stderr and lost["archive"] in result.stderr
    return lost, taken


class Driver:
    """`zdd <args>` running in the background, its stderr (the steps it says) read line by
    line. With `own_group`, it runs in its own process group, so that killing it kills the
    Pulumi CLI and plugins it started too."""

    def __init__(self, env: dict[str, str], *args: str, own_group: bool = False) -> None:
        self.env = env
        self.own_group = own_group
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zdd.cli", *args],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=own_group,
        )

    def reach(self, step: str) -> None:
        """Read what the driver says until a line contains `step`; fail if it ends first."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if step in line:
                return
        raise AssertionError(f"the driver ended without reaching {step!r}")

    def kill(self) -> None:
        """SIGKILL the driver (with `own_group`, its whole process group) and reap it."""
        if self.own_group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self, timeout: float = 300) -> int:
        """Let the driver run to its end; its exit code."""
        assert self.process.stderr is not None
        self.process.stderr.read()
        return self.process.wait(timeout=timeout)


def update_locks(env: dict[str, str], stack: str) -> list[Path]:
    """The lock files of updates running on `stack` in the file backend of `env`."""
    backend = Path(env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    return list(backend.glob(f".pulumi/locks/*/*/{stack}/*.json"))


def snapshot(pulumi: Callable[..., Result], stack: str) -> tuple[str, str]:
    """What a stack holds: its exported state and its config file."""
    return pulumi("stack", "export", "-s", stack).stdout, config_file(stack).read_text()
