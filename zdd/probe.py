"""The load probe: steady reads and writes against the public endpoint for a whole deployment.

Every response is recorded. A write is acknowledged (its expected status), refused (503 with
Retry-After: the read-only window) or failed (anything else, including no answer); one the front
door held before carrying it out says so (`X-ZDD-Held`). Meanwhile some reads look up a write
acknowledged earlier: one that a later read through the public endpoint does not show is hidden
(the instance serving does not have it). Afterwards each acknowledged write is looked up through
the public endpoint; one that is missing is lost.
What it reads and writes is the app spec's `probe` section (`ProbeTarget`)::

    probe:
      reads: ["/", "/api/articles?limit=5"] # GET paths, taken in turn; 200 expected
      write:                                # every 10th request; none without this
        method: POST
        path: /api/articles
        json: {title: "{title}", text: probe}   # "{title}" becomes the write's unique name
        status: 201                         # the answer of an acknowledged write
        lookup: "/api/articles?title={title}"   # kept: 2xx with the title in its body
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from zdd.appspec import AppSpec, InvalidAppSpec, parse_file_text
from zdd.phases import HELD_HEADER, SERVED_BY_HEADER

if TYPE_CHECKING:
    import aiohttp

Outcome = Literal["ok", "refused", "failed", "hidden"]
Kind = Literal["read", "write", "read-back"]
TITLE = "{title}"
# A write may wait at the front door for up to its hold bound (30 s by default) and then take
# its own time: the probe waits as long as an impatient visitor's browser would.
REQUEST_TIMEOUT_SECONDS = 60
# Writes outstanding at once, per read slot: enough for a whole hold at the probe's write rate.
WRITE_SLOTS_PER_READ_SLOT = 50
KEEPALIVE_SECONDS = 5.0
# Read-backs pick among the most recently acknowledged writes.
_RECENT = 50


@dataclass(frozen=True)
class WriteRequest:
    method: str
    path: str
    body: Any  # JSON; TITLE in any of its strings becomes the write's unique title
    status: int
    lookup: str  # a GET path holding TITLE

    def body_for(self, title: str) -> Any:
        return _with_title(self.body, title)


@dataclass(frozen=True)
class ProbeTarget:
    """What the probe asks of a site: an app spec's `probe` section (default: reads of `/`)."""

    reads: tuple[str, ...] = ("/",)
    write: WriteRequest | None = None

    @classmethod
    def of(cls, spec: AppSpec | None) -> ProbeTarget:
        return cls.from_section(spec.probe) if spec is not None else cls()

    @classmethod
    def of_file(cls, path: Path) -> ProbeTarget:
        """The target of the app spec file at `path`."""
        return cls.of(parse_file_text(path.read_text(), str(path.parent)))

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ProbeTarget:
        unknown = sorted(set(section) - {"reads", "write"})
        if unknown:
            raise InvalidAppSpec(
                f"app spec field `probe.{unknown[0]}` is unknown; use `reads`, `write`"
            )
        reads = section.get("reads", list(cls.reads))
        if not isinstance(reads, list) or not reads or not all(_is_path(r) for r in reads):
            raise InvalidAppSpec(
                "app spec field `probe.reads` must be a non-empty list of paths starting with '/'"
            )
        write = section.get("write")
        return cls(tuple(reads), _write_request(write) if write is not None else None)


def _is_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _write_request(value: object) -> WriteRequest:
    fields = ("method", "path", "json", "status", "lookup")
    if not isinstance(value, Mapping) or set(value) - set(fields):
        raise InvalidAppSpec(
            f"app spec field `probe.write` must be a mapping of {', '.join(fields)}"
        )
    method, path, status = value.get("method", "POST"), value.get("path"), value.get("status", 201)
    lookup = value.get("lookup")
    if not isinstance(method, str) or not method.isalpha():
        raise InvalidAppSpec(
            "app spec field `probe.write.method` must be an HTTP method, e.g. POST"
        )
    if not _is_path(path):
        raise InvalidAppSpec("app spec field `probe.write.path` must be a path starting with '/'")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status < 300:
        raise InvalidAppSpec("app spec field `probe.write.status` must be a 2xx status, e.g. 201")
    if not _is_path(lookup) or TITLE not in str(lookup):
        raise InvalidAppSpec(
            f"app spec field `probe.write.lookup` must be a path holding {TITLE}, e.g. "
            f"/api/items?name={TITLE}"
        )
    return WriteRequest(method.upper(), str(path), value.get("json"), status, str(lookup))


def _with_title(body: Any, title: str) -> Any:
    if isinstance(body, str):
        return body.replace(TITLE, title)
    if isinstance(body, list):
        return [_with_title(item, title) for item in body]
    if isinstance(body, Mapping):
        return {key: _with_title(item, title) for key, item in body.items()}
    return body


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the probe started
    kind: Kind
    status: int  # 0 when there was no HTTP answer
    outcome: Outcome
    origin: str | None
    title: str | None = None
    version: str | None = None  # the site version that answered (X-ZDD-Version)
    seconds: float = 0.0  # from sending to the whole answer
    held_ms: int | None = None  # how long the front door held this write
    error: str | None = None  # why there was no HTTP answer


@dataclass
class ProbeReport:
    requests: int
    failed: int
    writes_acknowledged: int
    writes_refused: int
    writes_lost: int
    duration_seconds: float
    rate_per_second: float
    lost_titles: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Epoch seconds of the first and last refused write, if any.
    refused_between: tuple[float, float] | None = None
    # How many answers each site version gave.
    versions_served: dict[str, int] = field(default_factory=dict)
    # Writes the front door held and then carried out, the epoch seconds the first and last of
    # them were sent, and the longest of those holds.
    writes_held: int = 0
    held_between: tuple[float, float] | None = None
    longest_hold_seconds: float = 0.0
    # Acknowledged writes that a later read through the public endpoint did not show.
    writes_hidden: int = 0
    hidden_titles: list[str] = field(default_factory=list)
    longest_write_seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "writes_acknowledged": self.writes_acknowledged,
            "writes_refused": self.writes_refused,
            "writes_lost": self.writes_lost,
            "writes_held": self.writes_held,
            "held_between": list(self.held_between) if self.held_between else None,
            "longest_hold_seconds": round(self.longest_hold_seconds, 2),
            "writes_hidden": self.writes_hidden,
            "longest_write_seconds": round(self.longest_write_seconds, 2),
            "duration_seconds": round(self.duration_seconds, 2),
            "rate_per_second": round(self.rate_per_second, 1),
            "failures": self.failures[:10],
            "refused_between": list(self.refused_between) if self.refused_between else None,
            "versions_served": self.versions_served,
            "lost_titles": self.lost_titles,
            "hidden_titles": self.hidden_titles[:10],
        }


# Requests per second when none is asked for: enough to see a refusal of a few milliseconds.
DEFAULT_RATE = 400.0
# A probe paces itself by its rate: at least one request a second, at most what one client can send.
MIN_RATE, MAX_RATE = 1.0, 5_000.0


class LoadProbe:
    def __init__(
        self,
        public_url: str,
        target: ProbeTarget | None = None,
        *,
        rate: float = DEFAULT_RATE,
        write_every: int = 10,
        concurrency: int = 48,
    ) -> None:
        self.public_url = public_url
        self.target = target or ProbeTarget()
        self.rate = rate
        self.write_every = write_every
        self.concurrency = concurrency
        self.samples: list[Sample] = []
        self.started_at = 0.0  # time.time() at the first request, to line up with the phases
        self._run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acknowledged: list[str] = []
        self._pick = random.Random(self._run_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _request_for(self, n: int) -> tuple[Kind, str | None]:
        """Every `write_every`-th request writes; halfway between two writes, one reads back a
        write acknowledged earlier; the others read."""
        if self.target.write is not None:
            if n % self.write_every == 0:
                return "write", f"probe-{self._run_id}-{n}"
            if n % self.write_every == self.write_every // 2 and self._acknowledged:
                return "read-back", self._pick.choice(self._acknowledged[-_RECENT:])
        return "read", None

    async def _one(
        self,
        session: aiohttp.ClientSession,
        n: int,
        t0: float,
        kind: Kind,
        title: str | None,
    ) -> None:
        import aiohttp

        write = self.target.write
        sent = time.monotonic()
        held: int | None = None
        error: str | None = None
        try:
            if kind == "write" and write and title:
                request = session.request(write.method, write.path, json=write.body_for(title))
            elif kind == "read-back" and write and title:
                request = session.get(write.lookup.replace(TITLE, title))
            else:
                reads = self.target.reads
                request = session.get(reads[n % len(reads)])
            async with request as response:
                body = await response.read()
                status, origin = response.status, response.headers.get(SERVED_BY_HEADER)
                version = response.headers.get("X-ZDD-Version")
                refused = status == 503 and "Retry-After" in response.headers
                if HELD_HEADER in response.headers:
                    held = int(response.headers[HELD_HEADER])
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, origin, version, refused, body = 0, None, None, False, b""
            error = f"{type(exc).__name__}: {exc}"
        outcome: Outcome
        if kind == "write" and write:
            ok = status == write.status
            outcome = "ok" if ok else ("refused" if refused else "failed")
            if ok and title:
                self._acknowledged.append(title)
        elif kind == "read-back" and title:
            shown = 200 <= status < 300 and title.encode() in body
            outcome = "ok" if shown else ("hidden" if 0 < status < 500 else "failed")
        else:
            outcome = "ok" if status == 200 else "failed"
        self.samples.append(
            Sample(
                sent - t0,
                kind,
                status,
                outcome,
                origin,
                title,
                version,
                seconds=time.monotonic() - sent,
                held_ms=held,
                error=error,
            )
        )

    async def _run(self) -> None:
        # Imported here: building its default TLS context is a third of a `zdd` command's start,
        # and most commands never start a probe.
        import aiohttp

        # Writes have slots of their own: a front door holding them for seconds must not take
        # the slots of the reads, which would then go unmeasured for as long as it holds.
        write_slots = self.concurrency * WRITE_SLOTS_PER_READ_SLOT
        # Idle connections are closed well before the front door's keep-alive timeout (30 s):
        # a POST on a connection the server closed that very moment is failed, never retried.
        connector = aiohttp.TCPConnector(
            limit=self.concurrency + write_slots, keepalive_timeout=KEEPALIVE_SECONDS
        )
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(
            self.public_url, connector=connector, timeout=timeout
        ) as session:
            slots = {
                "read": asyncio.Semaphore(self.concurrency),
                "write": asyncio.Semaphore(write_slots),
            }
            tasks: set[asyncio.Task[None]] = set()
            t0 = time.monotonic()
            self.started_at = time.time()
            due = t0

            async def one(n: int, kind: Kind, title: str | None, slot: asyncio.Semaphore) -> None:
                try:
                    await self._one(session, n, t0, kind, title)
                finally:
                    slot.release()

            for n in itertools.count(1):
                # A steady rate; when the machine cannot keep up, the probe sends as fast as it
                # can with `concurrency` reads outstanding and never builds a backlog.
                due = max(due + 1 / self.rate, time.monotonic() - 1 / self.rate)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                kind, title = self._request_for(n)
                slot = slots["write" if kind == "write" else "read"]
                await slot.acquire()
                if self._stop.is_set():
                    slot.release()
                    break
                task = asyncio.create_task(one(n, kind, title, slot))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    def _kept(self, client: httpx.Client, title: str) -> bool:
        assert self.target.write is not None  # only writes have titles
        response = client.get(self.target.write.lookup.replace(TITLE, title))
        return response.is_success and title in response.text

    def report(self, verify_url: str | None = None) -> ProbeReport:
        """Summarise, looking up each acknowledged write through `verify_url` (default: public)."""
        acknowledged = [s.title for s in self.samples if s.kind == "write" and s.outcome == "ok"]
        with httpx.Client(base_url=verify_url or self.public_url, timeout=30) as client:
            lost = [t for t in acknowledged if t and not self._kept(client, t)]
        failed = [s for s in self.samples if s.outcome == "failed"]
        duration = max((s.at for s in self.samples), default=0.0)
        refused = [self.started_at + s.at for s in self.samples if s.outcome == "refused"]
        held_samples = [s for s in self.samples if s.held_ms and s.outcome == "ok"]
        held = [(s.held_ms or 0) / 1000 for s in held_samples]
        held_sent = [self.started_at + s.at for s in held_samples]
        hidden = sorted({s.title for s in self.samples if s.outcome == "hidden" and s.title})
        writes = [s.seconds for s in self.samples if s.kind == "write" and s.outcome == "ok"]
        return ProbeReport(
            requests=len(self.samples),
            failed=len(failed),
            writes_acknowledged=len(acknowledged),
            writes_refused=sum(1 for s in self.samples if s.outcome == "refused"),
            writes_lost=len(lost),
            duration_seconds=duration,
            rate_per_second=len(self.samples) / duration if duration else 0.0,
            lost_titles=lost,
            failures=[
                f"{s.at:.2f}s {s.kind} -> {s.status} via {s.origin}"
                + (f" ({s.error}, after {s.seconds:.2f}s)" if s.error else "")
                for s in failed
            ],
            versions_served=dict(Counter(s.version for s in self.samples if s.version)),
            refused_between=((min(refused), max(refused)) if refused else None),
            writes_held=len(held),
            held_between=(min(held_sent), max(held_sent)) if held_sent else None,
            longest_hold_seconds=max(held, default=0.0),
            writes_hidden=len(hidden),
            hidden_titles=hidden,
            longest_write_seconds=max(writes, default=0.0),
        )
