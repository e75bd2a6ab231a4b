"""The checks between phases. Each failure message says what was seen and what to do next."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from zdd.appspec import DEFAULT_HEALTH_PATH
from zdd.console import Say
from zdd.environment import LoggedComponent
from zdd.errors import GateFailed
from zdd.health import APP_IDENTITY_HEADER, Identity, http_get, poll_until, wait_healthy
from zdd.phases import DatabaseMode, Instance, Phase

T = TypeVar("T")


def wait_public_origin(
    public_url: str,
    origin: str,
    *,
    header: str = APP_IDENTITY_HEADER,
    path: str = DEFAULT_HEALTH_PATH,
    timeout: float = 30.0,
    samples: int = 5,
) -> None:
    """The public endpoint answers `path` from `origin` only, `samples` times in a row; `header`
    of each answer names the origin that gave it."""

    def check() -> str | None:
        for _ in range(samples):
            try:
                response = http_get(f"{public_url}{path}", timeout=5)
            except httpx.HTTPError as exc:
                return f"no answer from the public endpoint ({exc.__class__.__name__})"
            served_by = response.headers.get(header)
            if not response.is_success or served_by != origin:
                return f"public endpoint answered {response.status_code} from {served_by!r}"
        return None

    complaint = poll_until(time.monotonic() + timeout, check)
    if complaint:
        raise GateFailed(
            f"public traffic did not move to the {origin} within {timeout:.0f}s: {complaint}"
        )


DRAIN_HINT = "Retry with `zdd resume`, or `zdd abort` to give traffic back to the primary."


def wait_none_in_flight(
    in_flight: Callable[[], int],
    origin: str,
    *,
    timeout: float = 60.0,
    hint: str = DRAIN_HINT,
) -> float:
    """Rule 2 of docs/design.md: nothing touches `origin` until no public request reaches it;
    returns the wait."""
    started = time.monotonic()

    def check() -> str | None:
        count = in_flight()
        return f"{count} request(s) still in flight to the {origin}" if count else None

    complaint = poll_until(started + timeout, check)
    if complaint:
        raise GateFailed(
            f"drain check: {complaint} after {timeout:.0f}s; the {origin} was not touched. {hint}"
        )
    return time.monotonic() - started


@dataclass(frozen=True)
class Liveness:
    """Whether a component takes connections and answers HTTP (any status: the gates judge
    what it answers, this only tells a dead process from a live one)."""

    url: str
    listening: bool
    answering: bool


def liveness_of(url: str, timeout: float = 2.0) -> Liveness:
    parsed = httpx.URL(url)
    try:
        with socket.create_connection((parsed.host, parsed.port or 80), timeout=timeout):
            pass
    except OSError:
        return Liveness(url, listening=False, answering=False)
    try:
        http_get(url, timeout=timeout)
    except httpx.HTTPError:
        return Liveness(url, listening=True, answering=False)
    return Liveness(url, listening=True, answering=True)


# The stack outputs that name a component's address, and the component's name for the operator.
COMPONENT_URLS = {"front door": "public_url", "primary": "primary_url", "clone": "clone_url"}


def components(outputs: Mapping[str, Any]) -> dict[str, Liveness]:
    """The health of every component the stack's last update left in place."""
    return {
        name: liveness_of(str(outputs[key]))
        for name, key in COMPONENT_URLS.items()
        if outputs.get(key)
    }


# -- which check runs between which phases ---------------------------------------------------


@dataclass(frozen=True)
class GateContext:
    """What the checks between two phases need, bound by the driver to the stack and its
    target, so that the table below never needs to know which cloud it is on."""

    outputs: Mapping[str, Any]
    current_version: str
    target_version: str
    # The database mode the clone was given (the primary is always read-write).
    clone_mode: DatabaseMode
    health_path: str
    # How long an app may take to answer as expected, and the public origin to move.
    healthy_within: float
    moved_within: float
    served_by_header: str
    say: Say
    # A cloud front door: when the switch to an origin was deployed everywhere (None locally).
    wait_switched: Callable[[Instance], datetime | None]
    # Rules 2 and 5 of docs/design.md: no public request reaches the origin any more.
    wait_drained: Callable[[Instance, datetime | None, str], None]
    # Before traffic leaves an origin: the counters that will judge its drain see its requests.
    drain_visible: Callable[[Instance], None]
    # How the operator sees a component's log (`primary`, `clone`, `frontdoor`), in words.
    see_log: Callable[[str], str]


def _naming_log(context: GateContext, component: str, check: Callable[[], T]) -> T:
    """Run `check`; a failure ends with where the log that tells why is (a gate that waited
    for a site that never answered says nothing of what the site itself said)."""
    try:
        return check()
    except GateFailed as exc:
        raise GateFailed(f"{exc}; {context.see_log(component)}") from None


def _healthy(context: GateContext, url_key: str, identity: Identity, what: str) -> None:
    _naming_log(
        context,
        identity.instance,
        lambda: wait_healthy(
            context.outputs[url_key],
            identity,
            what=what,
            timeout=context.healthy_within,
            health_path=context.health_path,
        ),
    )


def _public_on(context: GateContext, origin: Instance) -> datetime | None:
    def moved() -> datetime | None:
        switched = context.wait_switched(origin)
        wait_public_origin(
            context.outputs["public_url"],
            origin,
            header=context.served_by_header,
            path=context.health_path,
            timeout=context.moved_within,
        )
        return switched

    return _naming_log(context, LoggedComponent.FRONTDOOR, moved)


def _drained(context: GateContext, origin: Instance, switched: datetime | None, hint: str) -> None:
    _naming_log(
        context, LoggedComponent.FRONTDOOR, lambda: context.wait_drained(origin, switched, hint)
    )


def clone_healthy(context: GateContext) -> None:
    context.say("gate: clone healthy with the current version")
    identity = Identity(context.current_version, Instance.CLONE, context.clone_mode)
    _healthy(context, "clone_url", identity, "the clone")
    # Rule 2 of docs/design.md fails closed: the primary's drain will be judged by counters
    # that are shown, before any traffic moves, to see the primary's requests.
    context.drain_visible(Instance.PRIMARY)


def traffic_on_clone(context: GateContext) -> None:
    context.say("gate: public traffic on the clone, primary drained")
    switched = _public_on(context, Instance.CLONE)
    _drained(context, Instance.PRIMARY, switched, DRAIN_HINT)


def new_primary_verified(context: GateContext) -> None:
    version, url = context.target_version, context.outputs["preview_url"]
    context.say(f"gate: verify the new primary ({version}) at {url}")
    identity = Identity(version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
    _healthy(context, "preview_url", identity, f"the primary on {version}")


def _back_on_primary(context: GateContext, version: str) -> None:
    switched = _public_on(context, Instance.PRIMARY)
    # Rule 5 of docs/design.md: the clone goes only once no request is still on its way.
    _drained(
        context, Instance.CLONE, switched, "The primary holds the traffic; retry with `zdd resume`."
    )
    identity = Identity(version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
    _healthy(context, "primary_url", identity, "the primary")


def traffic_back_on_primary(context: GateContext) -> None:
    context.say("gate: public traffic back on a healthy primary, clone drained")
    _back_on_primary(context, context.target_version)


def traffic_back_on_untouched_primary(context: GateContext) -> None:
    context.say("gate: public traffic back on the untouched primary, clone drained")
    _back_on_primary(context, context.current_version)


def untouched_primary_healthy(context: GateContext) -> None:
    context.say("gate: the untouched primary is healthy before it gets the traffic back")
    identity = Identity(context.current_version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
    _healthy(context, "primary_url", identity, "the primary")


# The check that must pass before the stack moves from the first phase to the second; a move
# not in the table (a re-run, `idle` to `clone`) has none.
GATES: dict[tuple[Phase, Phase], Callable[[GateContext], None]] = {
    (Phase.CLONE, Phase.CUTOVER): clone_healthy,
    (Phase.CUTOVER, Phase.DEPLOY): traffic_on_clone,
    (Phase.DEPLOY, Phase.RETURN): new_primary_verified,
    # On a target that switches in its program (the update's switch to the clone waits for
    # the drain, its switch back for the new primary's verification): one update from the
    # healthy clone deploys and returns, or deploys and waits for approval.
    (Phase.CLONE, Phase.RETURN): clone_healthy,
    (Phase.CLONE, Phase.DEPLOY): clone_healthy,
    (Phase.CUTOVER, Phase.RETURN): traffic_on_clone,
    (Phase.RETURN, Phase.IDLE): traffic_back_on_primary,
    # An abort: the primary was never touched. Once the switch was asked for, the traffic
    # moves back (withdraw) and the clone goes only when it is drained, as after `return`.
    (Phase.CLONE, Phase.IDLE): untouched_primary_healthy,
    (Phase.CLONE, Phase.WITHDRAW): untouched_primary_healthy,
    (Phase.CUTOVER, Phase.WITHDRAW): untouched_primary_healthy,
    (Phase.WITHDRAW, Phase.IDLE): traffic_back_on_untouched_primary,
}
