"""Whether a site answers its health path as the instance the platform started: rule 1 of
docs/design.md, checked by the driver's gates and by the program's own verification before a
front door switches to a site. Neutral: both sides import it."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from zdd.appspec import DEFAULT_HEALTH_PATH
from zdd.errors import GateFailed

POLL_SECONDS = 0.1
# The header the sites set on every answer naming their instance; a front door of the
# platform's own may name the origin itself instead (see `TargetOps.served_by_header`).
APP_IDENTITY_HEADER = "X-ZDD-Instance"


@functools.cache
def _tls() -> ssl.SSLContext:
    """Made once: `httpx.get` would load the CA bundle again at every call (about 30 ms)."""
    return ssl.create_default_context()


def http_get(url: str, timeout: float) -> httpx.Response:
    # Plain HTTP has no certificate to check: the CA bundle is loaded only for HTTPS (30 ms of
    # the program's verification of a local primary, inside the read-only window).
    return httpx.get(url, timeout=timeout, verify=_tls() if url.startswith("https:") else False)


@dataclass(frozen=True)
class Identity:
    version: str
    instance: str
    database_mode: str | None = None


def poll_until(
    deadline: float, check: Callable[[], str | None], interval: float = POLL_SECONDS
) -> str | None:
    """Call `check` until it returns None (passed) or time runs out; return the last complaint."""
    complaint: str | None = "not checked"
    while True:
        complaint = check()
        if complaint is None or time.monotonic() >= deadline:
            return complaint
        time.sleep(interval)


def _identity_complaint(seen: Mapping[str, Any] | None, expected: Identity) -> str | None:
    if seen is None:
        return None
    wanted = {"version": expected.version, "instance": expected.instance}
    if expected.database_mode:
        wanted["database_mode"] = expected.database_mode
    wrong = [f"{k} {seen.get(k)!r} (expected {v!r})" for k, v in wanted.items() if seen.get(k) != v]
    return "; ".join(wrong) or None


def _reported_identity(response: httpx.Response) -> Mapping[str, Any] | None:
    """The identity a site reports on its health path, if it reports one (a JSON object that
    names its `instance`); a site the platform did not write needs not."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, Mapping) and "instance" in body else None


def wait_healthy(
    url: str,
    expected: Identity,
    *,
    what: str,
    timeout: float = 30.0,
    health_path: str = DEFAULT_HEALTH_PATH,
) -> None:
    """Rule 1 of docs/design.md: an app gets traffic only once its health path answers 2xx. It
    runs the version the platform started; a site that reports its identity must report the
    expected one."""
    address = f"{url}{health_path}"

    def check() -> str | None:
        try:
            response = http_get(address, timeout=5)
        except httpx.HTTPError as exc:
            return f"no answer from {address} ({exc.__class__.__name__})"
        if not response.is_success:
            return f"{address} answered {response.status_code}: {response.text[:200]}"
        return _identity_complaint(_reported_identity(response), expected)

    complaint = poll_until(time.monotonic() + timeout, check)
    if complaint:
        raise GateFailed(
            f"{what} is not healthy after {timeout:.0f}s: {complaint}; the app spec's `health` "
            f"path is {health_path}: fix `health` or see why the site does not answer there"
        )
