"""`make chaos`'s choices: which engine a run uses, when the database server is the victim,
and which failures the downtime of the server or the front door explains (no deployment runs
here)."""

from __future__ import annotations

import random

from zdd import chaos
from zdd.probe import Sample


def test_mixed_runs_alternate_and_a_server_victim_needs_postgresql() -> None:
    everything = chaos.ALL_VICTIMS
    assert [chaos.database_of_run(n, "mixed", everything) for n in (1, 2, 3)] == [
        "sqlite", "postgresql", "sqlite",
    ]  # fmt: skip
    assert chaos.database_of_run(1, "sqlite", everything) == "sqlite"
    assert chaos.database_of_run(1, "mixed", (chaos.DATABASE_SERVER,)) == "postgresql"


def test_the_database_server_is_a_victim_on_postgresql_only() -> None:
    rng = random.Random(7)
    on_sqlite = {chaos.choose_victim(rng, "sqlite", chaos.ALL_VICTIMS) for _ in range(200)}
    assert chaos.DATABASE_SERVER not in on_sqlite and on_sqlite == set(chaos.VICTIMS)
    on_server = [chaos.choose_victim(rng, "postgresql", chaos.ALL_VICTIMS) for _ in range(200)]
    assert 60 < on_server.count(chaos.DATABASE_SERVER) < 140
    only = (chaos.DATABASE_SERVER,)
    assert chaos.choose_victim(rng, "postgresql", only) == chaos.DATABASE_SERVER


def test_failures_while_the_database_is_down_are_counted_apart_whatever_their_status() -> None:
    def failed(at: float, status: int, seconds: float = 0.01) -> Sample:
        return Sample(
            at=at, kind="read", status=status, outcome="failed", origin=None, seconds=seconds
        )

    samples = [failed(9.0, 500), failed(9.95, 500, 0.1), failed(10.5, 500), failed(12.0, 0)]
    samples.append(failed(20.0, 500))
    ok = Sample(at=11.0, kind="read", status=200, outcome="ok", origin="primary")
    during, span = chaos._database_failures([*samples, ok], (10.0, 11.0))
    # Answered after the kill (one sent just before it), and within the reconnect slack.
    assert during == 3 and span == 11.0
    assert chaos._database_failures(samples, None) == (0, 11.0)


def test_requests_that_lost_their_connection_with_the_front_door_are_counted_apart() -> None:
    def failed(at: float, status: int, seconds: float) -> Sample:
        return Sample(
            at=at, kind="write", status=status, outcome="failed", origin=None, seconds=seconds
        )

    samples = [
        failed(7.0, 0, 3.0),  # held at the front door from before the kill: ended with it
        failed(10.5, 0, 0.01),  # sent while it was down
        failed(9.0, 0, 0.5),  # no answer, but before the kill
        failed(10.2, 503, 0.01),  # an HTTP answer is never excused
    ]
    during, span = chaos._failure_spans(samples, (10.0, 10.3))
    assert during == 2 and span == 3.5
    assert chaos._failure_spans(samples, None) == (0, 3.5)
