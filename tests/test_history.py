"""`zdd history` tells the truth from the stack alone: every page of its update history, each
deployment's real outcome (a clone gate that aborted it is no success, a rollback says to what)
and the version it set out for."""

from __future__ import annotations

from typing import Any

import pytest

from zdd import cli
from zdd import stack as stack_module
from zdd.history import (
    PROBE_KEY,
    gate_failure,
    group_history,
    kept_until_recorded,
    pending_gate_failure,
    pending_probe,
    probe_figures,
    strategy_field,
)
from zdd.phases import Phase
from zdd.stack import Stack


def update(
    action: str, phase: str, to: str, *, result: str = "succeeded", deployment: str | None = "d1",
    since: str = "v1", **more: Any,
) -> dict[str, Any]:  # fmt: skip
    """One update's record as `read_history` makes it from the update's message."""
    return {
        "action": action, "deployment": deployment, "from": since, "to": to, "phase": phase,
        "result": result, "started": f"2025-01-01T00:00:{phase[:2]}", "seconds": 1.0, **more,
    }  # fmt: skip


def newest_first(*updates: dict[str, Any]) -> list[dict[str, Any]]:
    return list(reversed(updates))


def test_a_deployment_the_clone_gate_aborted_is_no_success() -> None:
    failed = pending_gate_failure(gate_failure(Phase.CLONE, Phase.CUTOVER, at=1.0))
    (init, deployment) = reversed(
        group_history(
            newest_first(
                update("init", "idle", "v1", deployment=None, since=""),
                update("deploy", "clone", "v2"),
                update("deploy+abort", "idle", "v2", **failed),
            )
        )
    )
    assert init["outcome"] == "succeeded" and init["to_version"] == "v1"
    assert deployment["outcome"] == "aborted"
    assert deployment["outcome_detail"] == "aborted at gate clone -> cutover"
    assert deployment["failed_at"] == {"gate": "clone -> cutover"}
    assert deployment["actions"] == ["deploy", "abort"]
    assert (deployment["from_version"], deployment["to_version"]) == ("v1", "v2")


def test_a_rolled_back_deployment_shows_the_version_it_attempted_and_where_it_failed() -> None:
    (entry,) = group_history(
        newest_first(
            update("deploy", "clone", "v2"),
            update("deploy", "cutover", "v2"),
            update("deploy", "deploy", "v2", result="failed"),
            update("rollback-code-only", "deploy", "v1"),
            update("rollback-code-only", "return", "v1"),
            update("rollback-code-only", "idle", "v1"),
        )
    )
    assert entry["outcome"] == "rolled-back" and entry["rolled_back_to"] == "v1"
    assert (entry["from_version"], entry["to_version"]) == ("v1", "v2")
    assert entry["failed_at"] == {"phase": "deploy"}
    assert entry["outcome_detail"] == "rolled back to v1 (code only) after phase deploy failed"
    assert [p["result"] for p in entry["phases"]][2] == "failed"


def test_an_on_failure_rollback_after_a_failed_gate_is_told_as_such() -> None:
    failed = pending_gate_failure(gate_failure(Phase.DEPLOY, Phase.RETURN, at=2.0))
    (entry,) = group_history(
        newest_first(
            update("deploy", "clone", "v3"),
            update("deploy", "cutover", "v3"),
            update("deploy", "deploy", "v3"),
            update("deploy+rollback-with-database", "deploy", "v1", **failed),
            update("deploy+rollback-with-database", "return", "v1"),
            update("deploy+rollback-with-database", "idle", "v1"),
        )
    )
    assert entry["outcome"] == "rolled-back" and entry["attempted_versions"] == ["v3"]
    assert entry["outcome_detail"] == (
        "rolled back to v1 (with the database) after gate deploy -> return failed"
    )


def test_a_roll_forward_succeeds_on_the_version_it_rolled_forward_to() -> None:
    (entry,) = group_history(
        newest_first(
            update("deploy", "cutover", "v2"),
            update("deploy", "deploy", "v2", result="failed"),
            update("rollforward", "deploy", "v3"),
            update("rollforward", "idle", "v3"),
        )
    )
    assert entry["outcome"] == "succeeded" and "failed_at" not in entry
    assert entry["attempted_versions"] == ["v2", "v3"] and entry["to_version"] == "v3"


def test_the_newest_deployment_tells_a_gate_failure_that_only_its_config_holds_yet() -> None:
    deploying = newest_first(update("deploy", "clone", "v3"), update("deploy", "deploy", "v3"))
    config = gate_failure(Phase.DEPLOY, Phase.RETURN)
    (entry,) = group_history(deploying, config)
    assert entry["outcome"] == "failed" and entry["failed_at"] == {"gate": "deploy -> return"}
    (waiting,) = group_history(deploying, {"awaitApproval": "true"})
    assert waiting["outcome"] == "awaiting-approval"
    (running,) = group_history(deploying, {})
    assert running["outcome"] == "in-progress"


def test_an_update_after_a_finished_deployment_is_an_entry_of_its_own() -> None:
    # The deployment's id stays in the config after it ended; a later repair or app spec
    # change is not part of it.
    entries = group_history(
        newest_first(
            update("deploy", "idle", "v2"),
            update("app-set", "idle", "v2", since="v2", result="failed"),
        )
    )
    assert [e["actions"] for e in entries] == [["app-set"], ["deploy"]]
    assert entries[0]["outcome_detail"] == "failed at phase idle"
    assert entries[1]["outcome"] == "succeeded"


class _Pages:
    """The CLI's `stack history`: one page at a time, 10 updates unless told otherwise."""

    def __init__(self, count: int) -> None:
        self.updates = [f"update {n}" for n in range(count, 0, -1)]

    def history(self, page_size: int = 10, page: int = 1, show_secrets: bool = True) -> list[str]:
        return self.updates[(page - 1) * page_size : page * page_size]


@pytest.mark.parametrize("count", [0, 3, 7, 25])
def test_every_page_of_the_update_history_is_read(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(stack_module, "HISTORY_PAGE_SIZE", 3)
    pages = _Pages(count)
    stack = Stack.__new__(Stack)
    stack._stack = pages  # type: ignore[assignment]
    assert stack.history() == pages.updates  # type: ignore[comparison-overlap]


def test_the_table_shows_the_attempted_version_and_the_outcome_in_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = group_history(
        newest_first(
            update("deploy", "deploy", "v2", result="failed"),
            update("rollback-code-only", "idle", "v1"),
        )
    )
    cli._print_history(entries)
    shown = capsys.readouterr().err
    assert (
        "v1 -> v2" in shown and "rolled back to v1 (code only) after phase deploy failed" in shown
    )
    assert "deploy 1.0s!" in shown  # the update that failed


def test_each_deployment_keeps_the_strategy_it_took() -> None:
    """The last update of a deployment finds `zdd:strategy` cleared: the path is what the
    updates before it recorded, and an update outside a deployment records none."""
    compatible = {"phase": "clone", "strategy": "compatible"}
    assert strategy_field(compatible) == {"strategy": "compatible"}
    assert strategy_field({"phase": "cutover"}) == {"strategy": "clone"}
    assert strategy_field({"phase": "idle", "strategy": "compatible"}) == {}
    later, earlier = group_history(
        newest_first(
            update("deploy", "clone", "v1.1", **strategy_field(compatible)),
            update("deploy", "return", "v1.1", strategy="compatible"),
            update("deploy", "idle", "v1.1"),
            update("deploy", "clone", "v2", deployment="d2", since="v1.1", strategy="clone"),
            update("deploy", "idle", "v2", deployment="d2", since="v1.1"),
        )
    )
    assert (earlier["to_version"], earlier["strategy"]) == ("v1.1", "compatible")
    assert (later["to_version"], later["strategy"]) == ("v2", "clone")


def _probe(deployment: str, action: str, **figures: float) -> dict[str, Any]:
    report = {"requests": 100, "failed": 0, "writes_held": 0, "longest_hold_seconds": 0.0}
    return pending_probe(probe_figures(deployment, action, {**report, **figures}))


def test_each_deployment_keeps_what_its_probes_saw_and_its_read_only_window() -> None:
    """A probe's figures arrive with the update after its command (the next deployment's first,
    or the completion's), and in the config for the newest; each goes to the deployment it
    names, summed over that deployment's commands, the longest hold the longest of them."""
    paused = _probe("d1", "deploy", writes_held=7, longest_hold_seconds=3.5, writes_refused=1)
    completed = _probe("d1", "complete", requests=50, writes_held=2, longest_hold_seconds=1.25)
    config = probe_figures("d2", "deploy", {"requests": 9, "failed": 1, "writes_lost": 2})
    second, first = group_history(
        newest_first(
            update("deploy", "clone", "v2"),
            update("deploy", "cutover", "v2"),
            update("deploy", "deploy", "v2"),
            update("complete", "return", "v2", **paused),
            update("complete", "idle", "v2", read_only_window_seconds=4.25),
            update("deploy", "clone", "v3", deployment="d2", since="v2", **completed),
        ),
        config,
    )
    assert first["read_only_window_seconds"] == 4.25
    assert first["probe"] == {
        "commands": ["deploy", "complete"], "requests": 150, "failed": 0,
        "writes_acknowledged": 0, "writes_held": 9, "longest_hold_seconds": 3.5,
        "writes_refused": 1, "writes_lost": 0, "writes_hidden": 0,
    }  # fmt: skip
    assert "read_only_window_seconds" not in second
    assert (second["probe"]["requests"], second["probe"]["failed"]) == (9, 1)
    assert second["probe"]["writes_lost"] == 2
    # Once an update's message holds them, the config lets them go.
    assert kept_until_recorded({**paused, "phase": "return"}) == {PROBE_KEY: None}
