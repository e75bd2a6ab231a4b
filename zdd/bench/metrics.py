"""What the load probe saw, in figures: downtime, unavailable writes, spans, throughput."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from zdd.probe import ProbeReport, Sample

MIB = 1024 * 1024
BUCKET_SECONDS = 0.1


def rounded(value: float) -> float:
    """Seconds as the results carry them (milliseconds)."""
    return round(value, 3)


def timed_summary(
    times: Mapping[str, list[float]], named: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The median of each timed candidate, and the figures a result keeps of them: each median
    `named` (candidate: key) in seconds, and every run."""
    median = {name: statistics.median(values) for name, values in times.items()}
    figures: dict[str, Any] = {key: rounded(median[name]) for name, key in named.items()}
    figures["runs"] = {name: [rounded(v) for v in values] for name, values in times.items()}
    return median, figures


def bucketed_seconds(
    samples: Iterable[Sample], matches: Callable[[Sample], bool], bucket: float = BUCKET_SECONDS
) -> float:
    """Seconds covered by the `bucket`-second buckets (by answer time) holding a match."""
    # (the epsilon keeps an answer at exactly 6.1 s out of the bucket that ends there)
    buckets = {math.floor(s.at / bucket + 1e-9) for s in samples if matches(s)}
    return round(len(buckets) * bucket, 3)


def downtime_seconds(samples: Iterable[Sample], bucket: float = BUCKET_SECONDS) -> float:
    """Seconds with at least one failed request (refused writes are not failures)."""
    return bucketed_seconds(samples, lambda s: s.outcome == "failed", bucket)


def write_unavailable_seconds(samples: Iterable[Sample], bucket: float = BUCKET_SECONDS) -> float:
    """Seconds with at least one write that was refused or failed."""
    return bucketed_seconds(
        samples, lambda s: s.kind == "write" and s.outcome in ("refused", "failed"), bucket
    )


def span_of(samples: Iterable[Sample], matches: Callable[[Sample], bool]) -> float:
    """Seconds from the first to the last matching answer (0 if fewer than two)."""
    times = [s.at for s in samples if matches(s)]
    return max(times) - min(times) if times else 0.0


def parse_sizes(text: str) -> list[float]:
    """`"10,100"` -> [10.0, 100.0] (MiB), ascending, no duplicates."""
    sizes = sorted({float(part) for part in text.replace(" ", "").split(",") if part})
    if not sizes or sizes[0] <= 0:
        raise ValueError(f"BENCH_SIZES_MB {text!r}: expected positive numbers, e.g. 10,100")
    return sizes


def throughput_mb_s(size_bytes: float, seconds: float) -> float:
    return round(size_bytes / MIB / seconds, 1) if seconds > 0 else math.inf


def probe_figures(samples: Sequence[Sample], report: ProbeReport) -> dict[str, Any]:
    return {
        "requests": report.requests,
        "failed": report.failed,
        "downtime_seconds": downtime_seconds(samples),
        "write_unavailable_seconds": write_unavailable_seconds(samples),
        "downtime_seconds_1s": downtime_seconds(samples, 1.0),
        "write_unavailable_seconds_1s": write_unavailable_seconds(samples, 1.0),
        "writes_acknowledged": report.writes_acknowledged,
        "writes_refused": report.writes_refused,
        "writes_lost": report.writes_lost,
        "writes_held": report.writes_held,
        "longest_hold_seconds": rounded(report.longest_hold_seconds),
        "writes_hidden": report.writes_hidden,
        "longest_write_seconds": rounded(report.longest_write_seconds),
        "versions_served": report.versions_served,
        "probe_rate_achieved": round(report.rate_per_second, 1),
        "failures_first": report.failures[:5],
    }
