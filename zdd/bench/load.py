"""The load under which the benchmark measures: the probe, with steady load around the steps."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from zdd.chart import PhaseSpan
from zdd.probe import LoadProbe, ProbeReport, ProbeTarget, Sample

# Seconds of steady load before the first step and after the last.
LEAD_SECONDS = 2.0


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    samples: list[Sample]
    started_at: float  # the probe's first request, epoch seconds
    began: float  # first step
    ended: float  # last step done
    spans: list[PhaseSpan]
    report: ProbeReport

    @property
    def total_seconds(self) -> float:
        return self.ended - self.began


@contextmanager
def probing(public_url: str, target: ProbeTarget, rate: float) -> Iterator[LoadProbe]:
    """The probe on `public_url` at `rate` requests/s."""
    probe = LoadProbe(public_url, target, rate=rate)
    probe.start()
    try:
        deadline = time.monotonic() + 10
        while not probe.started_at and time.monotonic() < deadline:
            time.sleep(0.05)
        yield probe
    finally:
        probe.stop()


def measure(
    public_url: str,
    target: ProbeTarget,
    rate: float,
    body: Callable[[LoadProbe, list[PhaseSpan]], None],
) -> Measured:
    """Run `body` under the probe, with `LEAD_SECONDS` of steady load before and after."""
    spans: list[PhaseSpan] = []
    with probing(public_url, target, rate) as probe:
        time.sleep(LEAD_SECONDS)
        began = time.time()
        try:
            body(probe, spans)
        finally:
            ended = time.time()
        time.sleep(LEAD_SECONDS)
    report = probe.report()
    return Measured(list(probe.samples), probe.started_at, began, ended, spans, report)


@contextmanager
def step(spans: list[PhaseSpan], name: str) -> Iterator[None]:
    started = time.time()
    try:
        yield
    finally:
        spans.append((name, started, time.time()))
        say(f"  {name}: {time.time() - started:.2f}s")
