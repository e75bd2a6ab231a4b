"""The driver's Azure gates against loopback stand-ins for the Front Door endpoints.

Each stand-in is a small HTTP server on 127.0.0.1 started by the test and stopped at its end.
The public endpoint stand-in plays Front Door while an origin change propagates: for a while
some answers still come from the old origin, then only from the new one.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from infra.azure.target import _NAME_PREFIX_RE
from tests.helpers.azure_mocks import app_spec, run_program
from tests.helpers.commands import ROOT
from tests.helpers.settings import phase_settings
from tests.helpers.stand_in import Answer, site
from zdd import appspec, gates, health
from zdd.appspec import ReleaseKind, release_kind
from zdd.environment import Environment
from zdd.errors import BadInput, GateFailed
from zdd.phases import MIN_BACKUP_RETENTION_DAYS, Phase
from zdd.stack import SECRET_KEYS
from zdd.targets import GateTimeouts, check_version, ops_for
from zdd.targets.azure import AZURE, generate_password
from zdd.targets.local import LOCAL


class Propagation:
    """Front Door moving traffic from `old` to `new`: until `after` seconds have passed, every
    other answer still comes from `old` (edges that have not seen the change yet)."""

    def __init__(self, old: str, new: str, after: float) -> None:
        self.old, self.new = old, new
        self.switched_at = time.monotonic() + after
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, path: str) -> Answer:
        with self.lock:
            self.count += 1
            stale = time.monotonic() < self.switched_at and self.count % 2 == 0
        return site(self.old if stale else self.new)


# -- the public endpoint (the drain itself: tests/test_azure_frontdoor_gates.py) -----------


def test_public_traffic_gate_waits_for_front_door_to_propagate(stand_in):
    front_door = Propagation(old="primary", new="clone", after=0.4)
    public = stand_in(front_door)
    gates.wait_public_origin(public.url, "clone", timeout=10)
    assert time.monotonic() >= front_door.switched_at


# -- verification through the preview endpoint ---------------------------------------------


def test_verification_fails_on_a_wrong_version(stand_in):
    preview = stand_in(lambda path: site("primary", version="v1"))
    with pytest.raises(GateFailed) as failure:
        health.wait_healthy(
            preview.url,
            health.Identity("v2", "primary", "ReadWrite"),
            what="the primary on v2",
            timeout=0.3,
        )
    assert "the primary on v2 is not healthy" in str(failure.value)
    assert "version 'v1' (expected 'v2')" in str(failure.value)
    assert all(request["path"] == "/healthz" for request in preview.seen)


def test_verification_fails_when_the_preview_does_not_reach_the_primary(stand_in):
    preview = stand_in(lambda path: site("clone", version="v2", mode="ReadOnly"))
    with pytest.raises(GateFailed, match="instance 'clone' \\(expected 'primary'\\)"):
        health.wait_healthy(
            preview.url,
            health.Identity("v2", "primary", "ReadWrite"),
            what="the primary on v2",
            timeout=0.3,
        )


def test_verification_passes_once_the_new_version_answers(stand_in):
    ready_at = time.monotonic() + 0.3
    preview = stand_in(
        lambda path: site("primary", version="v2" if time.monotonic() >= ready_at else "v1")
    )
    health.wait_healthy(
        preview.url,
        health.Identity("v2", "primary", "ReadWrite"),
        what="the primary on v2",
        timeout=10,
    )
    assert time.monotonic() >= ready_at


# -- the rest of the driver's Azure knowledge ----------------------------------------------


def test_ops_for_azure_and_its_timeouts():
    assert ops_for("azure") is AZURE
    # Front Door propagates in minutes: every gate waits far longer than on the local target.
    for gate in ("healthy", "public_origin", "drained"):
        assert getattr(AZURE.timeouts, gate) >= 10 * getattr(LOCAL.timeouts, gate)
    assert LOCAL.timeouts == GateTimeouts()  # the local target keeps the gates' defaults


@pytest.mark.parametrize("version", ["v1", "v2", "v3-unhealthy", "v10.2.1", "v3-bad-migration"])
def test_well_formed_versions_are_deployable(version):
    check_version(version, AZURE, {"app": app_spec()})


@pytest.mark.parametrize("version", ["-latest", "v1;rm", "v" + "1" * 200])
def test_other_versions_are_refused(version):
    with pytest.raises(BadInput):
        check_version(version, AZURE, {"app": app_spec()})


def test_an_azure_stack_runs_the_site_its_app_spec_describes():
    with pytest.raises(BadInput, match="the stack has no app spec"):
        check_version("v1", AZURE, {})
    folder = app_spec(releases="/srv/site/releases/{version}", start=["bin/site"])
    with pytest.raises(BadInput, match=re.escape("'/srv/site/releases/{version}' is a folder")):
        check_version("v1", AZURE, {"app": folder})
    check_version("v1", AZURE, {"app": app_spec(releases="https://r.example.net/{version}.zip")})


def test_initial_config_is_what_the_program_needs(monkeypatch):
    monkeypatch.setenv("ZDD_AZURE_LOCATION", "northeurope")
    monkeypatch.delenv("ZDD_AZURE_OPERATOR_IP_ADDRESSES", raising=False)
    with pytest.raises(BadInput, match="ZDD_AZURE_OPERATOR_IP_ADDRESSES"):
        AZURE.initial_config(Environment(root=ROOT), "Web Shop_1")
    monkeypatch.setenv("ZDD_AZURE_OPERATOR_IP_ADDRESSES", "203.0.113.7")
    config = AZURE.initial_config(Environment(root=ROOT), "Web Shop_1")
    assert config["azureLocation"] == "northeurope"
    assert _NAME_PREFIX_RE.match(config["namePrefix"])
    assert re.fullmatch(r"zdd-web-shop-1-[0-9a-f]{6}", config["namePrefix"])
    assert config["resourceGroupName"] == f"rg-{config['namePrefix']}"
    assert int(config["backupRetentionDays"]) >= MIN_BACKUP_RETENTION_DAYS
    # Every password it generates is one the driver's stack wrapper stores encrypted
    # (tests/test_engine.py shows that it does).
    generated = {key for key in config if key.endswith("Password")}
    assert generated and generated <= SECRET_KEYS
    # Another stack gets other globally unique names and another password.
    other = AZURE.initial_config(Environment(root=ROOT), "Web Shop_1")
    assert other["namePrefix"] != config["namePrefix"]
    assert other["sqlAdminPassword"] != config["sqlAdminPassword"]
    # The program accepts it as it is.
    run = run_program(phase_settings(Phase.IDLE), config=config)
    assert (
        run.named("azure-sql").inputs["administratorLoginPassword"] == (config["sqlAdminPassword"])
    )


def test_generated_passwords_meet_azure_sql_rules():
    for _ in range(50):
        password = generate_password()
        assert len(password) == 32
        assert re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
        assert re.search(r"[0-9]", password) and re.search(r"[-_.!#]", password)
        assert "zddadmin" not in password.lower()
        assert not set(password) & set(";='\"{}")  # nothing a connection string would split on


@pytest.mark.parametrize(
    ("releases", "kind"),
    [
        ("acme.azurecr.io/site:{version}", ReleaseKind.IMAGE),
        ("registry.example.net:5000/team/site:release-{version}", ReleaseKind.IMAGE),
        ("site:{version}", ReleaseKind.IMAGE),
        ("https://r.example.net/site-{version}.zip", ReleaseKind.PACKAGE),
        ("/srv/site/releases/{version}", ReleaseKind.FOLDER),
        ("releases/{version}", ReleaseKind.FOLDER),
        ("acme.azurecr.io/{version}/site:latest", ReleaseKind.FOLDER),  # the version not a tag
    ],
)
def test_releases_name_a_folder_an_image_or_a_package(releases: str, kind: ReleaseKind):
    assert release_kind(releases) is kind


def test_an_azure_spec_is_refused_by_the_local_target():
    with pytest.raises(BadInput, match="the local target runs a release folder per version"):
        check_version("v1", LOCAL, {"app": app_spec()})


def test_an_azure_spec_reads_back_the_same_and_waits_minutes_by_default():
    spec = appspec.parse_file_text(
        "releases: acme.azurecr.io/site:{version}\n"
        "migrate: [deploy/migrate.sh, '{database}']\ndigest: [sqlcmd-digest]\n",
        "/srv/ops",
    )
    assert spec.start == () and spec.release("v2") == "acme.azurecr.io/site:v2"
    # No release folder here: a relative program is the spec folder's.
    assert spec.migrate == ("/srv/ops/deploy/migrate.sh", "{database}")
    assert spec.health.timeout_seconds == appspec.DEFAULT_REMOTE_HEALTH_TIMEOUT_SECONDS
    assert appspec.from_config({"app": spec.to_config()}) == spec
