"""A real application nobody here wrote, on the real engine: MLflow's tracking server from the
package index (apps/mlflow), deployed from 2.16.2 to 2.17.2, whose migration neither release can
run against the other's schema, under load; rolled back with its database; deployed again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.commands import ROOT, Result, build_releases, stack_dir
from tests.helpers.driver import paused_for_approval
from zdd.probe import REQUEST_TIMEOUT_SECONDS
from zdd.processes import free_port

# Builds a real application's releases, then deploys it: minutes, so scheduled first.
pytestmark = pytest.mark.engine(minutes=3)

APP = ROOT / "apps" / "mlflow"
OLDER, NEWER = "2.16.2", "2.17.2"
API = "/api/2.0/mlflow"
EXPERIMENT = "written-on-2.16.2"
NOTE = "written before the deployment"


@pytest.fixture(scope="session")
def mlflow_releases() -> None:
    build_releases("mlflow", OLDER, NEWER)


def call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.request(method, f"{url}{API}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def served_version(url: str) -> str:
    response = httpx.get(f"{url}/version", timeout=30)
    response.raise_for_status()
    return response.text


def assert_data_written_before(url: str, run_id: str) -> None:
    found = call(url, "GET", f"/experiments/get-by-name?experiment_name={EXPERIMENT}")
    run = call(url, "GET", f"/runs/get?run_id={run_id}")["run"]
    assert run["info"]["experiment_id"] == found["experiment"]["experiment_id"]
    assert {"key": "note", "value": NOTE} in run["data"]["tags"]


def assert_no_failed_request(report: dict[str, Any]) -> dict[str, Any]:
    probe: dict[str, Any] = report["probe"]
    assert probe["requests"] > 0 and probe["failed"] == 0, probe["failures"]
    return probe


def older_release_refuses(database: Path, scratch: Path) -> str:
    """What MLflow `OLDER` says when started on a copy of `database`; it must exit by itself."""
    copy = scratch / "copy.sqlite"
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    port = free_port()
    argv = [str(APP / "releases" / OLDER / "bin" / "mlflow"), "server"]
    argv += ["--backend-store-uri", f"sqlite:///{copy}", "--port", str(port)]
    argv += ["--artifacts-destination", str(scratch / "artifacts")]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as server:
        try:
            _, stderr = server.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the server and the gunicorn it started
            raise AssertionError(f"MLflow {OLDER} runs on the schema of {NEWER}") from None
    assert server.returncode != 0
    return stderr


def test_mlflow_deploys_smoothly_and_rolls_back_with_its_database(
    mlflow_releases: None,
    local_stack: Callable[..., dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
    tmp_path: Path,
) -> None:
    stack = local_stack(OLDER, APP / "app.yaml")
    name, public = stack["stack"], stack["public_url"]
    # MLflow's clone starts in seconds on a busy test machine: writes may wait longer than the
    # default 30 s for the primary to serve again, but a hold must end (carried out or refused)
    # before the probe gives up on the request, or a held write would count as failed.
    hold = REQUEST_TIMEOUT_SECONDS - 5
    assert pulumi("config", "set", "-s", name, "zdd:holdWritesSeconds", str(hold)).code == 0
    assert served_version(public) == OLDER
    experiment_id = call(public, "POST", "/experiments/create", {"name": EXPERIMENT})[
        "experiment_id"
    ]
    tags = [{"key": "note", "value": NOTE}]
    run = call(public, "POST", "/runs/create", {"experiment_id": experiment_id, "tags": tags})
    run_id = run["run"]["info"]["run_id"]

    # A deployment paused for approval: the new primary runs NEWER on the migrated database,
    # which OLDER refuses to start on, while the read-only clone serves the public.
    deploy = [name, "--version", NEWER, "--probe", "--yes", "--json"]
    paused = paused_for_approval(zdd, name, NEWER, "--probe")
    paused_probe = assert_no_failed_request(paused.json())
    # Held from the clone's copy on, refused while the deployment waits for approval; none
    # that the primary acknowledged is missing on the clone, which the probe reads through.
    assert paused_probe["writes_refused"] > 0
    assert paused_probe["lost_titles"] == [] and paused_probe["writes_hidden"] == 0
    status = zdd("status", "-s", name, "--json").json()
    assert status["traffic"] == "clone" and served_version(public) == OLDER
    assert served_version(status["preview_url"]) == NEWER
    assert_data_written_before(status["preview_url"], run_id)
    refusal = older_release_refuses(stack_dir(name) / "primary-g1.sqlite", tmp_path)
    assert "Detected out-of-date database schema" in refusal

    # Back to OLDER with the database of the restore point.
    back = zdd("rollback", "-s", name, "--with-database", "--probe", "--json")
    assert back.code == 0, back.stderr
    assert back.json()["outcome"] == "succeeded" and "read_only_violation" not in back.json()
    assert assert_no_failed_request(back.json())["writes_lost"] == 0
    assert served_version(public) == OLDER
    assert_data_written_before(public, run_id)

    # The same deployment to its end, as `auto` ships it: its rehearsal finds OLDER refusing
    # NEWER's schema, so the clone path runs.
    done = zdd("deploy", "-s", *deploy, "--strategy", "auto")
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["outcome"] == "succeeded" and "read_only_violation" not in report
    rehearsal = report["rehearsal"]
    assert report["strategy"] == "clone" and rehearsal["migration_ok"], rehearsal
    assert rehearsal["failure"]["step"] == "start"
    assert "Detected out-of-date database schema" in "\n".join(rehearsal["failure"]["log"])
    probe = assert_no_failed_request(report)
    assert probe["writes_lost"] == 0 and probe["writes_hidden"] == 0
    # Held, then carried out by the new primary: none refused within the hold bound.
    assert probe["writes_acknowledged"] > 0 and probe["writes_held"] > 0
    assert probe["writes_refused"] == 0
    first_held, last_held = probe["held_between"]
    on_clone_until = report["traffic_on_clone"][1]
    slack = 1.0  # the switches are timed when the engine reports them, a fraction late
    assert report["phases"][0]["started_at"] - slack <= first_held
    assert last_held <= on_clone_until + slack
    status = zdd("status", "-s", name, "--json").json()
    assert status["phase"] == "idle" and status["current_version"] == NEWER
    assert served_version(public) == NEWER
    assert_data_written_before(public, run_id)
    print(
        f"\nmlflow {OLDER} -> {NEWER}: {probe['requests']} requests, {probe['failed']} failed, "
        f"{probe['writes_acknowledged']} writes acknowledged ({probe['writes_held']} held, the "
        f"longest {probe['longest_hold_seconds']} s), {probe['writes_refused']} refused, "
        f"{probe['writes_lost']} lost; read-only window {report['read_only_window_seconds']} s; "
        f"phases {[(p['name'], p['seconds']) for p in report['phases']]}; rehearsal "
        f"{rehearsal['seconds']} s (migration {rehearsal['migration_seconds']} s)"
    )


def test_mlflow_on_postgresql_deploys_smoothly(
    mlflow_releases: None,
    local_stack: Callable[..., dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    """The same releases on MLflow's PostgreSQL backend store (the stack's own cluster): while
    the deployment waits for approval the clone serves OLDER from its read-only copy and the
    new primary NEWER on the migrated database; then it completes. Under the probe throughout,
    on one stack."""
    stack = local_stack(OLDER, APP / "app-postgresql.yaml")
    name, public = stack["stack"], stack["public_url"]
    # Writes wait at most 45 s, under the probe's 60 s request timeout: on a machine so busy
    # that the primary takes longer to serve again, a write is refused with Retry-After (rule
    # 4) rather than given up on by the probe.
    assert pulumi("config", "set", "-s", name, "zdd:holdWritesSeconds", "45").code == 0
    experiment_id = call(public, "POST", "/experiments/create", {"name": EXPERIMENT})[
        "experiment_id"
    ]
    tags = [{"key": "note", "value": NOTE}]
    run = call(public, "POST", "/runs/create", {"experiment_id": experiment_id, "tags": tags})
    run_id = run["run"]["info"]["run_id"]

    paused = paused_for_approval(zdd, name, NEWER, "--probe")
    paused_probe = assert_no_failed_request(paused.json())
    assert paused_probe["writes_lost"] == 0 and paused_probe["writes_hidden"] == 0
    status = zdd("status", "-s", name, "--json").json()
    assert status["traffic"] == "clone" and served_version(public) == OLDER
    assert_data_written_before(public, run_id)  # the clone, on its read-only copy
    assert served_version(status["preview_url"]) == NEWER
    assert_data_written_before(status["preview_url"], run_id)

    done = zdd("complete", "-s", name, "--probe", "--json")
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["outcome"] == "succeeded" and "read_only_violation" not in report
    probe = assert_no_failed_request(report)
    assert probe["writes_acknowledged"] > 0
    assert probe["writes_lost"] == 0 and probe["writes_hidden"] == 0
    status = zdd("status", "-s", name, "--json").json()
    assert status["phase"] == "idle" and status["current_version"] == NEWER
    assert served_version(public) == NEWER
    assert_data_written_before(public, run_id)
    requests = paused_probe["requests"] + probe["requests"]
    acknowledged = paused_probe["writes_acknowledged"] + probe["writes_acknowledged"]
    refused = paused_probe["writes_refused"] + probe["writes_refused"]
    print(
        f"\nmlflow on postgresql {OLDER} -> {NEWER}: {requests} requests, 0 failed, "
        f"{acknowledged} writes acknowledged, {refused} refused (while it waited for approval "
        f"or past the hold bound), 0 lost; phases "
        f"{[(p['name'], p['seconds']) for r in (paused.json(), report) for p in r['phases']]}"
    )
