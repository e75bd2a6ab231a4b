"""The load probe: steady reads and writes against the public endpoint for a whole deployment.

Every response is recorded. A write is acknowledged (201), refused (503 with Retry-After: the
read-only window) or failed (anything else, including no answer). Afterwards each acknowledged
write is looked up through the public endpoint; one that is missing is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import httpx

Outcome = Literal["ok", "refused", "failed"]


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the probe started
    kind: Literal["read", "write"]
    status: int  # 0 when there was no HTTP answer
    outcome: Outcome
    origin: str | None
    title: str | None = None
    version: str | None = None  # the site version that answered (X-ZDD-Version)


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

    def as_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "writes_acknowledged": self.writes_acknowledged,
            "writes_refused": self.writes_refused,
            "writes_lost": self.writes_lost,
            "duration_seconds": round(self.duration_seconds, 2),
            "rate_per_second": round(self.rate_per_second, 1),
            "failures": self.failures[:10],
            "refused_between": list(self.refused_between) if self.refused_between else None,
            "versions_served": self.versions_served,
            "lost_titles": self.lost_titles,
        }


class LoadProbe:
    def __init__(
        self,
        public_url: str,
        *,
        rate: float = 400.0,
        write_every: int = 10,
        concurrency: int = 48,
    ) -> None:
        self.public_url = public_url
        self.rate = rate
        self.write_every = write_every
        self.concurrency = concurrency
        self.samples: list[Sample] = []
        self.started_at = 0.0  # time.time() at the first request, to line up with the phases
        self._run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    async def _one(self, session: aiohttp.ClientSession, n: int, t0: float) -> None:
        is_write = n % self.write_every == 0
        title = f"probe-{self._run_id}-{n}" if is_write else None
        try:
            if is_write:
                request = session.post("/api/articles", json={"title": title, "text": "probe"})
            else:
                request = session.get("/" if n % 2 else "/api/articles?limit=5")
            async with request as response:
                await response.read()
                status, origin = response.status, response.headers.get("X-ZDD-Origin")
                version = response.headers.get("X-ZDD-Version")
                refused = status == 503 and "Retry-After" in response.headers
        except (aiohttp.ClientError, TimeoutError):
            status, origin, version, refused = 0, None, None, False
        ok = status == (201 if is_write else 200)
        outcome: Outcome = "ok" if ok else ("refused" if is_write and refused else "failed")
        self.samples.append(
            Sample(
                time.monotonic() - t0,
                "write" if is_write else "read",
                status,
                outcome,
                origin,
                title,
                version,
            )
        )

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            self.public_url, connector=connector, timeout=timeout
        ) as session:
            slots = asyncio.Semaphore(self.concurrency)
            tasks: set[asyncio.Task[None]] = set()
            t0 = time.monotonic()
            self.started_at = time.time()
            due = t0

            async def one(n: int) -> None:
                try:
                    await self._one(session, n, t0)
                finally:
                    slots.release()

            for n in itertools.count(1):
                # A steady rate; when the machine cannot keep up, the probe sends as fast as it
                # can with `concurrency` requests outstanding and never builds a backlog.
                due = max(due + 1 / self.rate, time.monotonic() - 1 / self.rate)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                if self._stop.is_set():
                    slots.release()
                    break
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    def report(self, verify_url: str | None = None) -> ProbeReport:
        """Summarise, looking up each acknowledged write through `verify_url` (default: public)."""
        acknowledged = [s.title for s in self.samples if s.kind == "write" and s.outcome == "ok"]
        response = httpx.get(f"{verify_url or self.public_url}/api/articles/titles", timeout=30)
        response.raise_for_status()
        present = set(response.json())
        lost = [t for t in acknowledged if t not in present]
        failed = [s for s in self.samples if s.outcome == "failed"]
        duration = max((s.at for s in self.samples), default=0.0)
        refused = [self.started_at + s.at for s in self.samples if s.outcome == "refused"]
        return ProbeReport(
            requests=len(self.samples),
            failed=len(failed),
            writes_acknowledged=len(acknowledged),
            writes_refused=sum(1 for s in self.samples if s.outcome == "refused"),
            writes_lost=len(lost),
            duration_seconds=duration,
            rate_per_second=len(self.samples) / duration if duration else 0.0,
            lost_titles=[t for t in lost if t],
            failures=[f"{s.at:.2f}s {s.kind} -> {s.status} via {s.origin}" for s in failed],
            versions_served=dict(Counter(s.version for s in self.samples if s.version)),
            refused_between=((min(refused), max(refused)) if refused else None),
        )
