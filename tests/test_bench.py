"""The benchmark's pure pieces: the by-hand commands of the side by side, how a phase's extra
time is split and judged, and the medians over rounds (no engine)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from zdd import postgres
from zdd.bench import pgcopy
from zdd.bench.frontdoor import front_door_for, trivial_origin
from zdd.bench.sidebyside import (
    BY_HAND,
    config_commands,
    median_phases,
    split,
    up_command,
    within_goal,
)
from zdd.phases import SERVED_BY_HEADER
from zdd.processes import free_port


def test_by_hand_config_is_typed_as_the_readme_does_it() -> None:
    commands = config_commands("site", {"currentVersion": "v2", "targetVersion": None})
    assert commands == [
        ["pulumi", "config", "set", "-s", "site", "zdd:currentVersion", "v2"],
        ["pulumi", "config", "rm", "-s", "site", "zdd:targetVersion"],
    ]


def test_the_raw_up_runs_every_policy_pack_without_a_preview() -> None:
    assert up_command("site", ["/p/one", "/p/two"]) == [
        "pulumi", "up", "--yes", "--skip-preview", "-s", "site",
        "--policy-pack", "/p/one", "--policy-pack", "/p/two",
    ]  # fmt: skip
    assert up_command("site", []) == ["pulumi", "up", "--yes", "--skip-preview", "-s", "site"]


def test_by_hand_walks_every_phase_and_ends_idle_on_the_new_version() -> None:
    phases = [str(phase) for phase, _change in BY_HAND]
    assert phases == ["clone", "return", "idle"]
    changes = [change for _phase, change in BY_HAND]
    assert changes[1].get("restorePoint")  # the program refuses return without one
    assert changes[-1]["targetVersion"] is None
    assert changes[-1]["currentVersion"] == changes[0]["targetVersion"]


def test_the_parts_add_up_to_the_difference() -> None:
    parts = split(zdd_seconds=2.4, raw_up=1.7, zdd_up=1.9, config=0.01, reads=0.09)
    assert parts["engine"] == pytest.approx(0.2)
    assert parts["gate"] == pytest.approx(0.4)
    assert sum(parts.values()) == pytest.approx(2.4 - 1.7)


def test_a_phase_is_within_the_goal_up_to_the_allowance() -> None:
    assert within_goal(zdd_seconds=2.0, raw_up=1.5, gate=0.3)
    assert within_goal(zdd_seconds=2.1, raw_up=1.5, gate=0.3)
    assert not within_goal(zdd_seconds=2.2, raw_up=1.5, gate=0.3)


def test_medians_over_rounds_judge_each_phase() -> None:
    def phase_row(name: str, raw: float, zdd: float) -> dict[str, float | str]:
        return {"phase": name, "raw_up": raw, "zdd": zdd, **split(zdd, raw, raw, 0.0, 0.0)}

    rounds = [
        {"phases": [phase_row(str(p), 1.0, 1.2 + n) for p, _ in BY_HAND]} for n in (0.0, 1.0, 0.1)
    ]
    rows = median_phases(rounds)
    assert [r["phase"] for r in rows] == [str(p) for p, _ in BY_HAND]
    first = rows[0]
    assert first["zdd"] == pytest.approx(1.3)
    assert first["difference"] == pytest.approx(0.3)
    assert first["gate"] == pytest.approx(0.3)
    assert first["within_goal"] is True


def test_the_front_door_section_runs_the_providers_front_door_before_its_origin() -> None:
    port = free_port()
    with trivial_origin(port), front_door_for(port, free_port()) as door:
        answer = httpx.get(f"{door}/healthz", timeout=10)
    assert answer.status_code == 200 and answer.text == "ok"
    assert answer.headers[SERVED_BY_HEADER] == "primary"


@pytest.mark.skipif(postgres.bin_dir() is None, reason="PostgreSQL is not installed")
def test_the_postgresql_section_times_ours_beside_every_raw_tool_and_leaves_nothing() -> None:
    lines: list[str] = []
    before = set(Path(tempfile.gettempdir()).glob("zdd-bench-pg-*"))
    result = pgcopy.figures(8, lines.append)  # pgbench's smallest scale: about 15 MiB
    assert set(Path(tempfile.gettempdir()).glob("zdd-bench-pg-*")) == before
    seconds = result["seconds"]
    for label in ("clone_copy", "restore_point", "pg_dump_pipe_pg_restore", "pg_basebackup",
                  "pg_dump_dir_j2_pg_restore_j2", "pg_dump_file", "pitr_named_point",
                  "pg_basebackup_sha256_manifest", "restore_point_check",
                  "restore_from_point"):  # fmt: skip
        assert seconds[label] > 0, label
    for job in ("clone_copy", "restore_point"):
        mine = result[job]
        ratio = seconds[job] / seconds[mine["best_raw"]]
        assert mine["over_best_raw"] == pytest.approx(ratio, rel=0.05), job
    # The restore point is measured beside both raw tools that could keep one.
    assert {"pg_basebackup", "pg_dump_pipe_pg_restore"} <= set(pgcopy.POINT_TOOLS)
    assert result["bytes"] > 10 * 2**20
    assert any("restore point" in line for line in lines)
