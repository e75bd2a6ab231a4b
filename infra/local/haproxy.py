"""HAProxy as the local front door: the config it starts from, and its runtime API (admin socket).

One backend holds the primary and the clone as servers. The server that takes the traffic is
`ready`; another that exists is in `drain` (health-checked, no new requests), one that does not
exist is in `maint`. Both keep the requests they already have, so a switch cuts none. Each
request on a keep-alive connection is routed on its own (HTTP mode), so clients move with it.

Writes (every method but GET, HEAD and OPTIONS) go through a second backend whose servers track
the first one's, so HAProxy's own counters tell how many writes are in flight. A map entry that
the runtime API flips without a reload says what the edge does with a write: pass it, hold it
(a Lua action waits, in 50 ms steps, until the entry says `passed` again, at most `hold_ms`),
or refuse it with 503 and `Retry-After`. A held write is carried out by whichever server has
the traffic when it is let go: the new primary, after `return`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zdd.phases import HELD_HEADER, SERVED_BY_HEADER, EdgeWrites

BACKEND = "site"
WRITES_BACKEND = "site_writes"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
RETRY_AFTER_SECONDS = 30
# The map entries the edge's write handling reads: what to do, and how long a hold may last.
_WRITES_KEY, _HOLD_KEY = "writes", "hold_ms"
# `show servers state` admin bits that keep new requests away: forced maintenance (the CLI's
# `maint`, or `disabled` in the config) and forced drain.
_FORCED_MAINT, _FORCED_DRAIN = 0x01, 0x08
# Longer than any request a site may take: a request HAProxy gave up on would leave the
# server's session count while the origin still works on it, and the drain would pass early.
_LONGEST_REQUEST = "24h"
# A server is marked down after about 2 s of failed checks, not sooner: a site process that
# crashed is started again by its supervisor within about that, and connection retries (a second
# apart) hold the requests that arrive meanwhile instead of failing them. Once a check failed,
# the next ones come every 100 ms (`fastinter`): a primary that just restarted on the new
# version passes one within a tenth of a second, and the switch back waits for that pass.
_CHECK = "check inter 500ms fastinter 100ms fall 16 rise 1"
# The front door's files, in its folder. HAProxy runs there and the config names them
# relatively, so the folder's path (whatever characters it holds) never has to be quoted.
CONFIG_FILE, MAP_FILE, SOCKET_FILE = "frontdoor.cfg", "frontdoor.map", "frontdoor.sock"
LUA_FILE = "frontdoor.lua"
# The Lua action that holds a write. It reads the same map the runtime API changes (HAProxy
# shares one map per file name), and leaves two variables: how long it held, and whether the
# hold ran out (then the config refuses the write).
LUA_TEXT = f"""-- smooth-deploy: hold a write while the map says so, at most {_HOLD_KEY} ms.
local edge = Map.new("{MAP_FILE}", Map._str)
core.register_action("zdd_hold_writes", {{"http-req"}}, function(txn)
  local started = core.now()
  local bound = tonumber(edge:lookup("{_HOLD_KEY}") or "0") or 0
  local held = 0
  while edge:lookup("{_WRITES_KEY}") == "{EdgeWrites.HOLD}" do
    if held >= bound then
      txn:set_var("txn.zdd_hold_expired", true)
      break
    end
    core.msleep(50)
    local now = core.now()
    held = (now.sec - started.sec) * 1000 + (now.usec - started.usec) // 1000
  end
  if held > 0 then txn:set_var("txn.zdd_held_ms", held) end
end)
"""


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
    writes: EdgeWrites
    health_path: str
    hold_seconds: float = 30.0


def _quoted(value: str) -> str:
    """A config word in single quotes (no expansion inside); a quote of its own is closed,
    given in double quotes, and reopened: HAProxy joins adjacent quoted parts."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render(config: FrontDoorConfig) -> str:
    """The whole config. It starts with the current traffic, so a restart comes up right."""
    methods = " ".join(READ_METHODS)

    def refusal(why: str, condition: str) -> str:
        return (
            f'http-request return status 503 content-type "application/json" '
            f"hdr Retry-After {RETRY_AFTER_SECONDS} string "
            f'"{{\\"error\\": \\"read-only\\", \\"detail\\": \\"{why}\\"}}" '
            f"if {condition}"
        )

    def writes_are(value: EdgeWrites) -> str:
        return f"!read_method {{ str({_WRITES_KEY}),map({MAP_FILE}) -m str {value} }}"

    def servers(backend_checks: bool) -> list[str]:
        return [
            f"    server {name} {address} "
            + (_CHECK if backend_checks else f"track {BACKEND}/{name}")
            + ("" if name == config.active or not backend_checks else " disabled")
            for name, address in config.servers.items()
        ]

    return "\n".join(
        [
            "global",
            f"    stats socket unix@{SOCKET_FILE} mode 600 level admin",
            "    maxconn 4096",
            f"    lua-load {LUA_FILE}",
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
            f"    acl read_method method {methods}",
            f"    http-request lua.zdd_hold_writes if {writes_are(EdgeWrites.HOLD)}",
            "    "
            + refusal("the site is read-only during a deployment", writes_are(EdgeWrites.REFUSE)),
            "    "
            + refusal(
                "the site is read-only for longer than a write may wait; try again",
                "{ var(txn.zdd_hold_expired) -m bool }",
            ),
            f"    http-response set-header {HELD_HEADER} %[var(txn.zdd_held_ms)] "
            "if { var(txn.zdd_held_ms) -m found }",
            f"    use_backend {WRITES_BACKEND} if !read_method",
            f"    default_backend {BACKEND}",
            "",
            f"backend {BACKEND}",
            # A read cut by an origin that died (no answer at all) is sent again, to the server
            # that takes the traffic.
            "    retries 4",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response",
            "    option httpchk",
            f"    http-check send meth GET uri {_quoted(config.health_path)}",
            # Any 2xx passes, as the gates judge a health path (a site may answer 204).
            "    http-check expect rstatus ^2[0-9][0-9]$",
            f"    http-response set-header {SERVED_BY_HEADER} %s",
            *servers(backend_checks=True),
            "",
            # Writes: the same servers, tracking the checks and the states (ready, drain, maint)
            # of the backend above. A write is sent again only when its connection failed: a
            # server that got it may have applied it.
            f"backend {WRITES_BACKEND}",
            "    retries 4",
            "    option redispatch 1",
            "    retry-on conn-failure",
            f"    http-response set-header {SERVED_BY_HEADER} %s",
            *servers(backend_checks=False),
            "",
        ]
    )


def map_text(writes: EdgeWrites, hold_seconds: float) -> str:
    return f"{_WRITES_KEY} {writes}\n{_HOLD_KEY} {round(hold_seconds * 1000)}\n"


def hold_writes_for_copy(folder: Path, timeout: float) -> None:
    """Before a read-only clone's copy: hold new writes at the stack's front door, on disk too
    (a front door that restarts comes back holding), and wait for those in flight."""
    map_path = folder / MAP_FILE
    entries = dict(line.split(" ", 1) for line in map_path.read_text().splitlines() if line)
    hold_seconds = int(entries.get(_HOLD_KEY, "0")) / 1000
    map_path.write_text(map_text(EdgeWrites.HOLD, hold_seconds))
    admin = AdminSocket(folder / SOCKET_FILE)
    try:
        admin.hold_writes(timeout)
    except FrontDoorError as exc:
        raise FrontDoorError(
            f"{exc}; the front door must hold writes before the clone's copy is taken "
            "(`zdd resume` brings a front door that died back)"
        ) from None


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


# A unix socket's address holds at most 107 bytes; a stack folder in a deep checkout is longer.
_SOCKET_PATH_MAX = 107


@contextmanager
def _reachable(path: str) -> Iterator[str]:
    """An address for the socket at `path` that fits: a long one is reached through a
    descriptor of its folder (/proc/self/fd/N/name), which names the same file."""
    if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)


class AdminSocket:
    """HAProxy's runtime API on the stack's unix socket."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock, _reachable(self.path) as address:
            sock.settimeout(self.timeout)
            try:
                sock.connect(address)
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

    def _stats(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.ask("show stat").removeprefix("# "))))

    def servers(self) -> dict[str, ServerState]:
        """Each server as its reads and writes together load it, in its state of the traffic
        backend (the writes backend tracks it)."""
        rows = self._stats()
        stats = {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }
        writes = {row["svname"]: row for row in rows if row["pxname"] == WRITES_BACKEND}
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
                sessions=int(row["scur"] or 0) + int(writes.get(name, {}).get("scur") or 0),
                queued=int(row["qcur"] or 0) + int(writes.get(name, {}).get("qcur") or 0),
                last_check=row["check_desc"] or row["check_status"],
            )
            for name, row in stats.items()
        }

    def set_writes(self, writes: EdgeWrites, hold_seconds: float | None = None) -> None:
        if hold_seconds is not None:
            self.change(f"set map {MAP_FILE} {_HOLD_KEY} {round(hold_seconds * 1000)}")
        self.change(f"set map {MAP_FILE} {_WRITES_KEY} {writes}")

    def writes_in_flight(self) -> int:
        """Writes the front door has passed to a server and not yet seen answered."""
        for row in self._stats():
            if row["pxname"] == WRITES_BACKEND and row["svname"] == "BACKEND":
                return int(row["scur"] or 0) + int(row["qcur"] or 0)
        raise FrontDoorError(f"the front door has no backend {WRITES_BACKEND}")

    def hold_writes(self, timeout: float) -> None:
        """Hold every new write and wait until the writes already passed on are answered, so
        that a copy taken now holds every write a visitor was told succeeded."""
        self.set_writes(EdgeWrites.HOLD)
        deadline = time.monotonic() + timeout
        # Twice in a row: a write that passed the hold rule just before the map changed may
        # not have reached its backend yet at the first reading.
        quiet = 0
        while quiet < 2:
            quiet = quiet + 1 if self.writes_in_flight() == 0 else 0
            if time.monotonic() >= deadline:
                raise FrontDoorError(
                    f"writes still in flight to the primary after {timeout:.0f}s of holding new "
                    "ones; the clone's copy was not taken"
                )
            time.sleep(0.05)

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
        taking requests, so there is never a moment without a server. Writes are held or
        refused before a read-only clone gets the traffic, and let go only once it lost it.
        """
        if config.writes is not EdgeWrites.PASS:
            self.set_writes(config.writes, config.hold_seconds)
        self.set_state(config.active, "ready")
        self.wait_passing(config.active, config.health_path, timeout)
        for name, state in server_states(config, available).items():
            if name != config.active:
                self.set_state(name, state)
        if config.writes is EdgeWrites.PASS:
            self.set_writes(config.writes, config.hold_seconds)
