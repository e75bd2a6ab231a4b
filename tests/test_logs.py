"""`zdd logs` shows a component's log, follows it as it grows, and says where an Azure stack's
logs are; a gate that fails ends its message with how to see the log that tells why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zdd import appspec, cli, logs
from zdd.environment import Environment
from zdd.errors import BadInput, GateFailed
from zdd.gatekeeper import pass_gate
from zdd.phases import Phase, PhaseSettings
from zdd.processes import free_port
from zdd.targets import azure
from zdd.targets.local import LOCAL


def test_the_last_lines_of_a_log_and_the_offset_to_follow_from(tmp_path: Path) -> None:
    log = tmp_path / "clone.log"
    log.write_text("one\ntwo\nthree\n")
    assert logs.read(log) == ("one\ntwo\nthree\n", 14)
    assert logs.read(log, lines=2) == ("two\nthree\n", 14)
    assert logs.read(log, lines=0) == ("", 14)


def test_following_a_log_passes_on_what_is_added_and_starts_over_when_it_is_replaced(
    tmp_path: Path,
) -> None:
    log = tmp_path / "primary.log"
    log.write_text("before\n")
    seen: list[str] = []
    done = threading.Event()

    def write(text: str) -> None:
        seen.append(text)
        if "after the restart" in text:
            done.set()

    follower = threading.Thread(
        target=logs.follow, args=(log, write, log.stat().st_size),
        kwargs={"until": done.is_set, "poll": 0.01}, daemon=True,
    )  # fmt: skip
    follower.start()
    with log.open("a") as handle:
        handle.write("caf\u00e9 appended\n")
    _wait_until(lambda: "".join(seen) == "caf\u00e9 appended\n")
    log.write_text("after the restart\n")  # shorter than what was read: a new log
    follower.join(10)
    assert not follower.is_alive()
    assert "".join(seen) == "caf\u00e9 appended\nafter the restart\n"


def _wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failed_gate_ends_with_the_command_that_shows_the_sites_log() -> None:
    settings = PhaseSettings(phase=Phase.CLONE, current_version="v1", target_version="v2")
    outputs = {"clone_url": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    config = {"gateTimeoutSeconds": "1"}
    with pytest.raises(GateFailed) as failed:
        pass_gate(Phase.CLONE, Phase.CUTOVER, settings, outputs, LOCAL, config, print, stack="s")
    assert str(failed.value).startswith("the clone is not healthy after 1s")
    assert str(failed.value).endswith("its log: `zdd logs --stack s clone`")


def test_the_local_target_keeps_each_log_in_the_stacks_folder(tmp_path: Path) -> None:
    assert LOCAL.log_of is not None
    where = LOCAL.log_of(Environment(tmp_path), "site", {}, "frontdoor")
    assert where.path == tmp_path / ".zdd" / "stacks" / "site" / "frontdoor.log"


def test_an_azure_stack_says_where_its_logs_are(tmp_path: Path) -> None:
    config = {"resourceGroupName": "rg-site", "namePrefix": "zdd-site-1a2b3c"}
    assert azure.AZURE.log_of is not None
    clone = azure.AZURE.log_of(Environment(tmp_path), "site", config, "clone")
    assert clone.path is None
    assert "az webapp log tail --resource-group rg-site --name zdd-site-1a2b3c-clone" in clone.where
    door = azure.AZURE.log_of(Environment(tmp_path), "site", config, "frontdoor")
    assert "Log Analytics" in door.where


def test_an_unknown_component_or_following_as_json_is_refused_with_exit_2() -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli.app, ["logs", "--stack", "site", "database"])
    assert unknown.exit_code == 2
    both = runner.invoke(cli.app, ["logs", "--stack", "site", "clone", "--follow", "--json"])
    assert both.exit_code == 2 and "cannot be one JSON document" in both.output


def test_the_database_servers_log_is_the_stacks_own_and_only_where_it_runs(tmp_path: Path) -> None:
    assert LOCAL.log_of is not None
    base = {"releases": str(tmp_path / "{version}"), "start": ["bin/site"]}
    on_server = appspec.from_document({**base, "database": {"engine": "postgresql"}}, None)
    config = {"app": on_server.to_config()}
    where = LOCAL.log_of(Environment(tmp_path), "site", config, "postgresql")
    assert where.path == tmp_path / ".zdd" / "stacks" / "site" / "postgresql.log"
    sqlite = {"app": appspec.from_document(base, None).to_config()}
    with pytest.raises(BadInput, match="runs no database server"):
        LOCAL.log_of(Environment(tmp_path), "site", sqlite, "postgresql")
    cloud = azure.log_of(Environment(tmp_path), "site", {"resourceGroupName": "rg"}, "postgresql")
    assert cloud.path is None and "server-logs list --resource-group rg" in cloud.where
