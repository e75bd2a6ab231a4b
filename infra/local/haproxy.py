"""HAProxy as the local front door: the config it starts from, and its runtime API (admin socket).

One backend holds the primary and the clone as servers. The server that takes the traffic is
`ready`; another that exists is in `drain` (health-checked, no new requests), one that does not
exist is in `maint`. Both keep the requests they already have, so a switch cuts none. Each
request on a keep-alive connection is routed on its own (HTTP mode), so clients move with it.
While a read-only clone holds the traffic, the edge itself answers writes with 503 and
`Retry-After`, driven by a map entry that the runtime API flips without a reload.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from zdd.phases import SERVED_BY_HEADER

BACKEND = "site"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
RETRY_AFTER_SECONDS = 30
# The map entry the edge's write refusal reads, and its two values.
_WRITES_KEY = "writes"
_REFUSED, _PASSED = "refused", "passed"
# `show servers state` admin bits that keep new requests away: forced maintenance (the CLI's
# `maint`, or `disabled` in the config) and forced drain.
_FORCED_MAINT, _FORCED_DRAIN = 0x01, 0x08
# Longer than any request a site may take: a request HAProxy gave up on would leave the
# server's session count while the origin still works on it, and the drain would pass early.
_LONGEST_REQUEST = "24h"
# A server is marked down after 2 s of failed checks, not sooner: a site process that crashed is
# started again by its supervisor within about that, and connection retries (a second apart)
# hold the requests that arrive meanwhile instead of failing them.
_CHECK = "check inter 500ms fall 4 rise 1"
# The front door's files, in its folder. HAProxy runs there and the config names them
# relatively, so the folder's path (whatever characters it holds) never has to be quoted.
CONFIG_FILE, MAP_FILE, SOCKET_FILE = "frontdoor.cfg", "frontdoor.map", "frontdoor.sock"


class FrontDoorError(RuntimeError):
    pass


def find_binary() -> str:
    """HAProxy on PATH, or where Debian installs it (/usr/sbin, often not on a user's PATH)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/local/sbin:/usr/sbin")
    if found is None:
        raise FrontDoorError("HAProxy (the local front door) is not installed: run `make setup`")
    return found


@dataclass(frozen=True)
class FrontDoorConfig:
    port: int
    # Server name -> "host:port", every server the front door may ever route to.
    servers: Mapping[str, str]
    active: str
    refuse_writes: bool
    health_path: str


def _quoted(value: str) -> str:
    """A config word in single quotes (no expansion inside); a quote of its own is closed,
    given in double quotes, and reopened: HAProxy joins adjacent quoted parts."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render(config: FrontDoorConfig) -> str:
    """The whole config. It starts with the current traffic, so a restart comes up right."""
    methods = " ".join(READ_METHODS)
    refusal = (
        f'http-request return status 503 content-type "application/json" '
        f"hdr Retry-After {RETRY_AFTER_SECONDS} string "
        '"{\\"error\\": \\"read-only\\", \\"detail\\": \\"the site is read-only during a '
        'deployment\\"}" '
        f"if !{{ method {methods} }} {{ str({_WRITES_KEY}),map({MAP_FILE}) "
        f"-m str {_REFUSED} }}"
    )
    servers = [
        f"    server {name} {address} {_CHECK}" + ("" if name == config.active else " disabled")
        for name, address in config.servers.items()
    ]
    return "\n".join(
        [
            "global",
            f"    stats socket unix@{SOCKET_FILE} mode 600 level admin",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout http-request 30s",
            "    timeout http-keep-alive 30s",
            "    timeout queue 30s",
            # A health check waits its turn behind the traffic at a busy origin (a site with a
            # few sync workers under load); by default it would time out after `inter` (500 ms)
            # and the only server that can take the traffic would be marked down.
            "    timeout check 10s",
            f"    timeout client {_LONGEST_REQUEST}",
            f"    timeout server {_LONGEST_REQUEST}",
            f"    timeout tunnel {_LONGEST_REQUEST}",
            # Not `option abortonclose`: a request whose client left is still served, and
            # still counted, until its origin answers.
            "",
            "frontend public",
            f"    bind 127.0.0.1:{config.port}",
            f"    {refusal}",
            f"    default_backend {BACKEND}",
            "",
            f"backend {BACKEND}",
            # A read cut by an origin that died (no answer at all) is sent again, to the server
            # that takes the traffic; a write never is, since the dead one may have applied it.
            "    retries 4",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response",
            f"    http-request disable-l7-retry if !{{ method {methods} }}",
            "    option httpchk",
            f"    http-check send meth GET uri {_quoted(config.health_path)}",
            # Any 2xx passes, as the gates judge a health path (a site may answer 204).
            "    http-check expect rstatus ^2[0-9][0-9]$",
            f"    http-response set-header {SERVED_BY_HEADER} %s",
            *servers,
            "",
        ]
    )


def map_text(refuse_writes: bool) -> str:
    return f"{_WRITES_KEY} {_REFUSED if refuse_writes else _PASSED}\n"


def server_states(config: FrontDoorConfig, available: Iterable[str]) -> dict[str, str]:
    """Each server's runtime state: `ready` for the one taking the traffic, `drain` for another
    whose site exists (checked, no new requests), `maint` for one whose site does not."""
    present = set(available)
    return {
        name: "ready" if name == config.active else "drain" if name in present else "maint"
        for name in config.servers
    }


@dataclass(frozen=True)
class ServerState:
    """One server as HAProxy's own counters show it."""

    name: str
    # HAProxy's words: UP, DOWN, MAINT, DRAIN, or "UP 1/2" while a check is failing.
    status: str
    admin_state: int
    # Requests the server is working on, and requests waiting for it.
    sessions: int
    queued: int
    last_check: str

    @property
    def takes_traffic(self) -> bool:
        return not self.admin_state & (_FORCED_MAINT | _FORCED_DRAIN)

    @property
    def in_flight(self) -> int:
        return self.sessions + self.queued

    @property
    def passes_checks(self) -> bool:
        """Up, with its latest health check passed (not "UP 1/2", nor just out of `maint`)."""
        return self.status == "UP"


class AdminSocket:
    """HAProxy's runtime API on the stack's unix socket."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except OSError as exc:
                raise FrontDoorError(f"the front door's admin socket {self.path}: {exc}") from None
        return b"".join(chunks).decode()

    def wait_ready(self, timeout: float) -> None:
        """HAProxy listens on its port a moment before its admin socket answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ask("show info")
                return
            except FrontDoorError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def change(self, command: str) -> None:
        """A `set` command answers nothing when it worked, and says why when it did not."""
        answer = self.ask(command).strip()
        if answer:
            raise FrontDoorError(f"front door refused {command!r}: {answer}")

    def servers(self) -> dict[str, ServerState]:
        stats = {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(self.ask("show stat").removeprefix("# ")))
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }
        # `show servers state`: a version line, a `#` header, then one line per server.
        lines = self.ask(f"show servers state {BACKEND}").splitlines()
        header = lines[1].removeprefix("# ").split()
        admin = {
            fields["srv_name"]: int(fields["srv_admin_state"])
            for fields in (dict(zip(header, line.split(), strict=False)) for line in lines[2:])
            if fields
        }
        return {
            name: ServerState(
                name=name,
                status=row["status"],
                admin_state=admin[name],
                sessions=int(row["scur"] or 0),
                queued=int(row["qcur"] or 0),
                last_check=row["check_desc"] or row["check_status"],
            )
            for name, row in stats.items()
        }

    def refuse_writes(self, refuse: bool) -> None:
        self.change(f"set map {MAP_FILE} {_WRITES_KEY} {_REFUSED if refuse else _PASSED}")

    def set_state(self, server: str, state: str) -> None:
        self.change(f"set server {BACKEND}/{server} state {state}")

    def wait_passing(self, server: str, health_path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (seen := self.servers()[server]).passes_checks:
            if time.monotonic() >= deadline:
                raise FrontDoorError(
                    f"the {server} does not pass its health check ({health_path}) after "
                    f"{timeout:.0f}s (HAProxy: {seen.status}, {seen.last_check}); the traffic "
                    "did not move to it"
                )
            time.sleep(0.05)

    def route(self, config: FrontDoorConfig, available: Iterable[str], timeout: float) -> None:
        """Send new requests to `config.active` only; the others keep what they have.

        The new server is made ready and must pass a health check before the old one stops
        taking requests, so there is never a moment without a server. Writes are refused before
        a read-only clone gets the traffic, and passed again only after it lost it.
        """
        if config.refuse_writes:
            self.refuse_writes(True)
        self.set_state(config.active, "ready")
        self.wait_passing(config.active, config.health_path, timeout)
        for name, state in server_states(config, available).items():
            if name != config.active:
                self.set_state(name, state)
        if not config.refuse_writes:
            self.refuse_writes(False)
