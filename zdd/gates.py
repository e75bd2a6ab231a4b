"""The checks between phases. Each failure message says what was seen and what to do next."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from zdd.errors import GateFailed

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Identity:
    version: str
    instance: str
    database_mode: str | None = None


def _until(deadline: float, check: Callable[[], str | None]) -> str | None:
    """Call `check` until it returns None (passed) or time runs out; return the last complaint."""
    complaint: str | None = "not checked"
    while True:
        complaint = check()
        if complaint is None or time.monotonic() >= deadline:
            return complaint
        time.sleep(POLL_SECONDS)


def _identity_complaint(seen: dict[str, str], expected: Identity) -> str | None:
    wanted = {"version": expected.version, "instance": expected.instance}
    if expected.database_mode:
        wanted["database_mode"] = expected.database_mode
    wrong = [f"{k} {seen.get(k)!r} (expected {v!r})" for k, v in wanted.items() if seen.get(k) != v]
    return "; ".join(wrong) or None


def wait_healthy(url: str, expected: Identity, *, what: str, timeout: float = 30.0) -> None:
    """Rule 1: an app gets traffic only if its health check answers with the expected version."""

    def check() -> str | None:
        try:
            response = httpx.get(f"{url}/healthz", timeout=5)
        except httpx.HTTPError as exc:
            return f"no answer from {url}/healthz ({exc.__class__.__name__})"
        if response.status_code != 200:
            return f"{url}/healthz answered {response.status_code}: {response.text[:200]}"
        return _identity_complaint(response.json(), expected)

    complaint = _until(time.monotonic() + timeout, check)
    if complaint:
        raise GateFailed(f"{what} is not healthy after {timeout:.0f}s: {complaint}")


def wait_public_origin(
    public_url: str, origin: str, *, timeout: float = 30.0, samples: int = 5
) -> None:
    """The public endpoint answers from `origin` only, `samples` times in a row."""

    def check() -> str | None:
        for _ in range(samples):
            try:
                response = httpx.get(f"{public_url}/__identity", timeout=5)
            except httpx.HTTPError as exc:
                return f"no answer from the public endpoint ({exc.__class__.__name__})"
            served_by = response.headers.get("X-ZDD-Instance")
            if response.status_code != 200 or served_by != origin:
                return f"public endpoint answered {response.status_code} from {served_by!r}"
        return None

    complaint = _until(time.monotonic() + timeout, check)
    if complaint:
        raise GateFailed(
            f"public traffic did not move to the {origin} within {timeout:.0f}s: {complaint}"
        )


def wait_drained(in_flight: Callable[[], int], origin: str, *, timeout: float = 60.0) -> float:
    """Rule 2: nothing touches `origin` until no public request reaches it; returns the wait."""
    started = time.monotonic()

    def check() -> str | None:
        count = in_flight()
        return f"{count} request(s) still in flight to the {origin}" if count else None

    complaint = _until(started + timeout, check)
    if complaint:
        raise GateFailed(
            f"drain check: {complaint} after {timeout:.0f}s; the {origin} was not touched. "
            "Retry with `zdd resume`, or `zdd abort` to give traffic back to the primary."
        )
    return time.monotonic() - started
