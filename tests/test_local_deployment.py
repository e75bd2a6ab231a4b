"""The local target on the real engine: a full smooth deployment under load, the same one by
hand with `pulumi up` per phase, idempotent phases, and refused illegal transitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sampleapp.app import IDENTITY_PATH
from tests.helpers.commands import Result
from zdd.probe import DEFAULT_RATE

pytestmark = pytest.mark.engine

PHASES_BY_HAND = ["clone", "cutover", "deploy", "return", "idle"]
# Without approval the driver goes from `clone` straight to `return`: one update switches to
# the clone, waits for the drain, deploys, verifies and switches back.
DRIVER_PHASES = ["clone", "return", "idle"]


def identity(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}{IDENTITY_PATH}", timeout=10)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def test_full_deployment_under_load_loses_nothing(
    local_stack: Callable[[str], dict[str, Any]], zdd: Callable[..., Result]
) -> None:
    stack = local_stack("v1")
    name = stack["stack"]
    # At the CLI's own rate, not the tests' lighter one: this is the proof under load.
    result = zdd("deploy", "--stack", name, "--version", "v2", "--probe", "--probe-rate",
                 str(DEFAULT_RATE), "--yes", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["outcome"] == "succeeded"
    assert (report["from_version"], report["to_version"]) == ("v1", "v2")
    assert [p["name"] for p in report["phases"]] == DRIVER_PHASES
    probe = report["probe"]
    assert probe["requests"] >= 2000, probe
    assert probe["failed"] == 0, probe["failures"]
    assert probe["writes_lost"] == 0 and probe["writes_hidden"] == 0
    assert probe["writes_acknowledged"] > 0
    # ReadOnly: writes wait at the front door from the clone's copy until the primary serves
    # again, and only then; none is refused within the hold bound.
    assert probe["writes_refused"] == 0
    assert probe["writes_held"] > 0
    first_held, last_held = probe["held_between"]
    clone_started = report["phases"][0]["started_at"]
    on_clone_from, on_clone_until = report["traffic_on_clone"]
    # The switches are timed when the engine reports them, a fraction of a second late.
    slack = 1.0
    assert clone_started - slack <= first_held <= last_held <= on_clone_until + slack
    assert report["read_only_window_seconds"] == pytest.approx(
        on_clone_until - on_clone_from, abs=0.01
    )
    # The window against the primary's own work in it: the return update's steps on the
    # primary, each inside the window; the front door's switch is not the primary's work.
    work = report["primary_work"]
    returned = {c["resource"]: c for c in report["changed"] if c["phase"] == "return"}
    primary = ("primary-db-restore-point", "primary-db-migration", "primary-process",
               "primary-verified")  # fmt: skip
    assert work["resources"] == {n: returned[n]["seconds"] for n in primary}
    assert "front-door-cutover" in returned and "front-door-proxy" in returned
    assert 0 < work["seconds"] < report["read_only_window_seconds"]
    assert work["window_over_work"] == pytest.approx(
        report["read_only_window_seconds"] / work["seconds"], rel=0.02
    )

    # The history keeps what the visitors saw: the window and the probe's figures.
    (kept, _init) = zdd("history", "--stack", name, "--json").json()["deployments"]
    assert kept["read_only_window_seconds"] == pytest.approx(report["read_only_window_seconds"])
    assert kept["probe"]["commands"] == ["deploy"]
    for figure in ("requests", "writes_held", "writes_refused", "writes_lost", "failed"):
        assert kept["probe"][figure] == probe[figure], figure
    assert kept["probe"]["longest_hold_seconds"] == probe["longest_hold_seconds"]

    status = zdd("status", "--stack", name, "--json").json()
    assert status["phase"] == "idle" and status["current_version"] == "v2"
    assert status["traffic"] == "primary" and not status["deployment_in_progress"]
    assert identity(stack["public_url"]) == {
        "version": "v2",
        "instance": "primary",
        "database_mode": "ReadWrite",
    }


@pytest.mark.parametrize(
    "phases",
    [PHASES_BY_HAND, ["clone", "cutover", "return", "idle"], DRIVER_PHASES],
    ids=["deploy", "cutover-return", "straight"],
)
def test_deployment_by_hand_with_pulumi_up_per_phase_is_idempotent(
    local_stack: Callable[[str], dict[str, Any]], pulumi: Callable[..., Result], phases: list[str]
) -> None:
    stack = local_stack("v1")
    name = stack["stack"]

    def config_set(key: str, value: str) -> None:
        assert pulumi("config", "set", "--stack", name, f"zdd:{key}", value).code == 0

    expected_public = {
        "clone": ("v1", "primary"),
        "cutover": ("v1", "clone"),
        "deploy": ("v1", "clone"),
        "return": ("v2", "primary"),
        "idle": ("v2", "primary"),
    }
    config_set("targetVersion", "v2")
    for phase in phases:
        config_set("phase", phase)
        if phase == next(p for p in phases if p in ("deploy", "return")):
            config_set("restorePoint", "rp-by-hand")  # the primary's first change needs it
        if phase == "idle":
            config_set("currentVersion", "v2")
            assert pulumi("config", "rm", "--stack", name, "zdd:targetVersion").code == 0
        up = pulumi("up", "--yes", "--skip-preview", "--stack", name)
        assert up.code == 0, up.stdout + up.stderr
        # Re-running the phase changes nothing.
        again = pulumi("preview", "--expect-no-changes", "--stack", name)
        assert again.code == 0, again.stdout + again.stderr
        version, instance = expected_public[phase]
        seen = identity(stack["public_url"])
        assert (seen["version"], seen["instance"]) == (version, instance), phase
    outputs = pulumi("stack", "output", "--json", "--stack", name).json()
    assert outputs["phase"] == "idle" and outputs.get("clone_url") is None


def resources(pulumi: Callable[..., Result], name: str) -> list[dict[str, Any]]:
    """The stack's resources and their state, without timestamps and without the phase
    guard's read of the stack's own previous outputs (a read, not a managed resource)."""
    exported = pulumi("stack", "export", "--show-secrets", "--stack", name).json()
    return [
        r
        for r in exported["deployment"]["resources"]
        if r["type"] != "pulumi:pulumi:StackReference"
    ]


def test_illegal_transitions_are_refused_and_change_nothing(
    local_stack: Callable[[str], dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    stack = local_stack("v1")
    name = stack["stack"]

    # By hand: `idle` straight after `cutover` (the clone would go while it holds the traffic)
    # is refused by the program before any change.
    assert pulumi("config", "set", "--stack", name, "zdd:targetVersion", "v2").code == 0
    for phase in ("clone", "cutover"):
        assert pulumi("config", "set", "--stack", name, "zdd:phase", phase).code == 0
        assert pulumi("up", "--yes", "--skip-preview", "--stack", name).code == 0
    before = resources(pulumi, name)
    assert pulumi("config", "set", "--stack", name, "zdd:phase", "idle").code == 0
    refused = pulumi("up", "--yes", "--skip-preview", "--stack", name)
    assert refused.code != 0
    assert "cannot go to idle from cutover" in refused.stdout
    assert resources(pulumi, name) == before
    assert identity(stack["public_url"])["instance"] == "clone"

    # Through the driver: a second deployment while one is in progress.
    assert pulumi("config", "set", "--stack", name, "zdd:phase", "cutover").code == 0
    second = zdd("deploy", "--stack", name, "--version", "v2", "--yes", "--json")
    assert second.code == 3
    assert "already in progress" in second.json()["error"]
    assert resources(pulumi, name) == before
    config = pulumi("config", "--stack", name, "--json").json()
    assert config["zdd:phase"]["value"] == "cutover"


BAD_DEPLOY_INPUT = [
    (["--version", "v2;rm"], "malformed"),
    (["--version", "v9"], "version 'v9' has no release folder"),
    (["--version", "v2", "--mode", "read-write"], "--accept-data-loss"),
    (["--version", "v1"], "already runs v1"),
]


def test_bad_deploy_input_is_refused_before_any_change(
    local_stack: Callable[[str], dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    name = local_stack("v1")["stack"]
    config_before = pulumi("config", "--stack", name, "--json").stdout
    for args, message in BAD_DEPLOY_INPUT:
        result = zdd("deploy", "--stack", name, *args, "--yes", "--json")
        assert result.code == 2, args
        assert message in result.json()["error"], args
        assert pulumi("config", "--stack", name, "--json").stdout == config_before, args
    unknown = zdd("status", "--stack", "no-such-stack", "--json")
    assert unknown.code == 2 and "no stack named" in unknown.json()["error"]
