"""The timeline chart and the benchmark's pure helpers, on synthetic probe samples (no engine)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zdd.bench.database import grow_database, rows_needed
from zdd.bench.engine import ResourceStep, UpRecord, split_update
from zdd.bench.metrics import downtime_seconds, parse_sizes, span_of, write_unavailable_seconds
from zdd.chart import TimelineRun, rates, spans_from_durations, write_timeline
from zdd.probe import Sample

STARTED_AT = 1_700_000_000.0


def synthetic_samples() -> list[Sample]:
    """10 s at 100 requests/s (every tenth a write); reads fail in [4.0, 5.5) and writes are
    refused in [6.0, 6.95]."""
    samples = []
    for n in range(1000):
        at = n / 100
        write = n % 10 == 0
        if 4.0 <= at < 5.5 and not write:
            samples.append(Sample(at, "read", 502, "failed", "primary"))
        elif 6.0 <= at < 7.0 and write:
            samples.append(Sample(at, "write", 503, "refused", "clone", f"t{n}"))
        else:
            ok = Sample(at, "write", 201, "ok", "primary", f"t{n}") if write else None
            samples.append(ok or Sample(at, "read", 200, "ok", "primary"))
    return samples


def test_downtime_counts_buckets_that_hold_a_failure() -> None:
    samples = synthetic_samples()
    # Failures at 4.00 .. 5.49: 15 buckets of 100 ms, 2 buckets of 1 s.
    assert downtime_seconds(samples) == pytest.approx(1.5)
    assert downtime_seconds(samples, 1.0) == pytest.approx(2.0)
    # Refused writes at 6.0, 6.1, ... 6.9: 10 buckets of 100 ms, 1 of 1 s; none failed.
    assert write_unavailable_seconds(samples) == pytest.approx(1.0)
    assert write_unavailable_seconds(samples, 1.0) == pytest.approx(1.0)


def test_no_failure_no_downtime() -> None:
    samples = [Sample(i / 10, "read", 200, "ok", "primary") for i in range(100)]
    assert downtime_seconds(samples) == 0.0
    assert write_unavailable_seconds(samples) == 0.0
    assert downtime_seconds([]) == 0.0


def test_failed_write_makes_writes_unavailable_too() -> None:
    samples = [
        Sample(0.05, "write", 0, "failed", None, "a"),
        Sample(0.31, "write", 503, "refused", "clone", "b"),
        Sample(0.32, "read", 200, "ok", "clone"),
    ]
    assert downtime_seconds(samples) == pytest.approx(0.1)
    assert write_unavailable_seconds(samples) == pytest.approx(0.2)


def test_span_of_matching_answers() -> None:
    samples = synthetic_samples()
    assert span_of(samples, lambda s: s.origin == "clone") == pytest.approx(0.9)
    assert span_of(samples, lambda s: s.status == 418) == 0.0


def test_rows_needed() -> None:
    mib = 1024 * 1024
    assert rows_needed(10 * mib, 0, 2048) == 5120
    assert rows_needed(10 * mib, 4 * mib, 2048) == 3072
    assert rows_needed(10 * mib + 1, 0, 2048) == 5121  # rounds up: never short of the size
    assert rows_needed(100, 200, 10) == 0  # already bigger
    with pytest.raises(ValueError):
        rows_needed(100, 0, 0)


def test_parse_sizes() -> None:
    assert parse_sizes("100, 10,10") == [10.0, 100.0]
    assert parse_sizes("0.5") == [0.5]
    with pytest.raises(ValueError):
        parse_sizes("")
    with pytest.raises(ValueError):
        parse_sizes("0,10")


def test_grow_database_reaches_the_size(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute("INSERT INTO articles (title) VALUES ('kept')")
    conn.close()
    size = grow_database(path, 2)
    assert 2 * 1024 * 1024 <= size < 2.2 * 1024 * 1024
    assert path.stat().st_size == size  # checkpointed: the file itself has the size
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT title FROM articles").fetchall() == [("kept",)]
    conn.close()


def test_rates_per_bin() -> None:
    series = rates(synthetic_samples(), 0.5)
    assert len(series.starts) == 20
    assert series.served[0] == pytest.approx(100.0)  # 50 answers in 0.5 s
    assert series.failed[8] == pytest.approx(90.0)  # 45 failed reads in [4.0, 4.5)
    assert series.served[8] == pytest.approx(10.0)  # the writes still went through
    assert series.refused[12] == pytest.approx(10.0)  # 5 refused writes in [6.0, 6.5)


def test_spans_from_durations_spread_the_gaps() -> None:
    spans = spans_from_durations([("clone", 2.0), ("cutover", 1.0), ("deploy", 3.0)], 100.0, 108.0)
    assert spans == [("clone", 100.0, 102.0), ("cutover", 103.0, 104.0), ("deploy", 105.0, 108.0)]
    assert spans_from_durations([("a", 1.0), ("b", 1.0)], 10.0) == [
        ("a", 10.0, 11.0),
        ("b", 11.0, 12.0),
    ]


def test_timeline_png_is_written(tmp_path: Path) -> None:
    samples = synthetic_samples()
    phases = [
        ("stop", STARTED_AT + 4.0, STARTED_AT + 4.2),
        ("migrate", STARTED_AT + 4.2, STARTED_AT + 5.5),
    ]
    runs = [
        TimelineRun("maintenance", samples, STARTED_AT, phases, note="1000 requests"),
        TimelineRun(
            "smooth",
            samples,
            STARTED_AT,
            spans_from_durations(
                [("clone", 2.0), ("cutover", 1.0)], STARTED_AT + 1, STARTED_AT + 5
            ),
            window=(STARTED_AT + 6.0, STARTED_AT + 7.0),
        ),
    ]
    out = write_timeline(tmp_path / "sub" / "timeline.png", runs, title="synthetic")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_timeline_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_timeline(tmp_path / "x.png", [])


def test_split_update_cuts_an_update_into_its_resource_steps() -> None:
    steps = [
        ResourceStep("primary-process", "update", 2.0, started=106.0),
        ResourceStep("primary-db-migration", "update", 3.0, started=102.0),
        ResourceStep("primary-db", "update", 9.0, leaf=False, started=101.0),
    ]
    up = UpRecord("idle", 100.0, 110.0, 9.0, {"update": 2}, steps)
    labels = {"primary-db-migration": "migrate", "primary-process": "restart"}
    assert split_update(("up", 100.0, 110.0), up, labels) == [
        ("up: engine", 100.0, 102.0),
        ("migrate", 102.0, 105.0),
        ("up: engine", 105.0, 106.0),
        ("restart", 106.0, 108.0),
        ("up: engine", 108.0, 110.0),
    ]
    assert up.work_seconds == 5.0  # the component is not counted
    # Engine time too short to draw goes to the next step (or the last one).
    close = [ResourceStep("primary-process", "update", 2.0, started=105.1)]
    assert split_update(
        ("up", 105.0, 107.2), UpRecord("idle", 105.0, 107.2, 2.0, {}, close), labels
    ) == [("restart", 105.0, 107.2)]
    assert split_update(("up", 100.0, 110.0), None, labels) == [("up", 100.0, 110.0)]
