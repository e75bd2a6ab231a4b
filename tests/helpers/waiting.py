"""Waiting for a condition in real time, with a deadline that fails the test."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    what: str = "",
) -> None:
    """Poll `condition` every `interval` seconds until it is true; fail the test after
    `timeout` seconds, naming `what` it waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out {what}".strip()
        time.sleep(interval)
