"""The Azure target, phase by phase and recovery by recovery, under Pulumi's mocks.

Each test runs the real program assembly (`infra.program.build(declare(settings),
azure_target(config))`) against a fresh mock monitor that records every resource registration:
its type, logical name, inputs (with which of them are secrets) and options (protect,
retainOnDelete, ignoreChanges, dependencies). No engine, no Azure.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pulumi
import pytest
import yaml

from infra.azure.database import restore_point_in_time, retrying
from infra.azure.target import azure_target
from tests.helpers.azure_mocks import (
    APP,
    BASE_CONFIG,
    CLONE_PASSWORD,
    COMMAND,
    DATABASE,
    DYNAMIC,
    FRONT_DOOR_ID,
    MIGRATION_PASSWORD,
    ORIGIN,
    PASSWORD,
    PLAN,
    REGISTRY_HOST,
    REGISTRY_ID,
    RETENTION,
    ROUTE,
    SECRET_KEYS,
    SUBSCRIPTION,
    WAF,
    WEB_APP,
    Registration,
    Run,
    app_spec,
    run_program,
)
from tests.helpers.commands import ROOT
from tests.helpers.settings import RESTORE_POINT, SCENARIOS, phase_settings
from zdd.phases import (
    DECIDING_KEYS,
    MIN_BACKUP_RETENTION_DAYS,
    RESTORE_POINT_SUFFIX,
    Mode,
    Phase,
    declare,
)

ADMIN = BASE_CONFIG["zdd:sqlAdminLogin"]  # the SQL administrator the stack config names

# -- the scenarios -------------------------------------------------------------------------


# scenario -> (primary version, clone present, traffic)
EXPECTED = {
    "idle": ("v1", False, "primary"),
    "clone": ("v1", True, "primary"),
    "cutover": ("v1", True, "clone"),
    "deploy": ("v2", True, "clone"),
    "return": ("v2", True, "primary"),
    "idle-after": ("v2", False, "primary"),
    "withdraw": ("v1", True, "primary"),
    "rollforward": ("v3", True, "clone"),
    "rollback-code": ("v1", True, "clone"),
    "idle-after-rollback-code": ("v1", False, "primary"),
    "rollback-database": ("v1", True, "clone"),
    "return-after-rollback-database": ("v1", True, "primary"),
    "idle-after-rollback-database": ("v1", False, "primary"),
    "clone-on-generation-2": ("v1", True, "primary"),
    "deploy-on-generation-2": ("v2", True, "clone"),
}
GENERATION_1 = [name for name, s in SCENARIOS.items() if s.database_generation == 1]
GENERATION_2 = [name for name, s in SCENARIOS.items() if s.database_generation == 2]
# While the deployment that restored goes on, the old generation is kept.
KEEPS_PREVIOUS_GENERATION = {"rollback-database", "return-after-rollback-database"}
WITH_CLONE = [name for name, (_, clone, _) in EXPECTED.items() if clone]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    # Every scenario runs once, each against its own fresh mock monitor.
    yield {name: run_program(settings) for name, settings in SCENARIOS.items()}


# -- what exists in each phase -------------------------------------------------------------

FOUNDATION = {
    "azure-native:resources:ResourceGroup": 1,
    PLAN: 1,
    "azure-native:sql:Server": 1,
    "azure-native:sql:FirewallRule": 1,  # the operator's address; no 0.0.0.0 rule
    "azure-native:network:VirtualNetwork": 1,
    "azure-native:network:Subnet": 1,
    "azure-native:sql:VirtualNetworkRule": 1,
    "azure-native:managedidentity:UserAssignedIdentity": 1,
    "azure-native:authorization:RoleAssignment": 1,
    "azure-native:cdn:Profile": 1,
    "azure-native:cdn:AFDEndpoint": 2,
    # The preview endpoint's operators-only policy.
    WAF: 1,
    "azure-native:cdn:SecurityPolicy": 1,
    ROUTE: 2,
    # The read-only answer: a rule set whose one rule sends writes to a refusing origin.
    "azure-native:cdn:RuleSet": 1,
    "azure-native:cdn:Rule": 1,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_phase_declares_exactly_its_resource_types(runs: dict[str, Run], scenario: str):
    _, has_clone, _ = EXPECTED[scenario]
    kept_generation = scenario in KEEPS_PREVIOUS_GENERATION
    expected = Counter(FOUNDATION)
    expected.update(
        {
            DATABASE: 1 + has_clone + kept_generation,
            RETENTION: 1 + kept_generation,
            COMMAND: 1,  # the migration hook
            # The restore point's proof, from deploy until the deployment ends, and the clone's
            # access to its copy.
            DYNAMIC: int(declare(SCENARIOS[scenario]).restore_point is not None) + has_clone,
            # The sites, and the front door's refusing origin.
            WEB_APP: 2 + has_clone,
            # One single-origin group per site and the refusing one; the preview route shares
            # the primary's.
            "azure-native:cdn:AFDOriginGroup": 2 + has_clone,
            ORIGIN: 2 + has_clone,
        }
    )
    assert runs[scenario].types() == expected


@pytest.mark.parametrize("scenario", ["idle", "idle-after", "idle-after-rollback-database"])
def test_nothing_of_the_clone_exists_in_idle(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    assert not [r.name for r in run.registrations if "clone" in r.name]
    assert all(r.inputs.get("createMode") != "Copy" for r in run.of_type(DATABASE))
    assert [r.inputs["name"] for r in _sites(run)] == ["zdd-test-a1b2c3-primary"]
    assert {r.inputs["originName"] for r in run.of_type(ORIGIN)} == {"primary", "readonly"}
    assert run.outputs["clone_url"] is None and run.outputs["clone_database"] is None


# -- the primary database ------------------------------------------------------------------


def assert_primary_database_is(run: Run, reference: Registration, scenario: str) -> None:
    """`run` declares the primary database `reference` is, protected, and its site uses it."""
    database = run.named(reference.name)
    assert (database.urn, database.inputs, database.protect) == (
        reference.urn,
        reference.inputs,
        True,
    ), scenario
    assert run.outputs["primary_database"] == reference.inputs["databaseName"]


def test_primary_database_is_the_same_in_every_phase_but_a_rollback_with_database(
    runs: dict[str, Run],
):
    reference = runs["idle"].named("primary-db-g1")
    assert reference.inputs == {
        "databaseName": "site-g1",
        "serverName": "zdd-test-a1b2c3-sql",
        "resourceGroupName": "rg-zdd-test",
        "location": "westeurope",
        "sku": {"name": "S0"},
        "createMode": "Default",
        "tags": {"zdd-role": "primary", "zdd-generation": "1"},
    }
    assert reference.protect and not reference.retain_on_delete and not reference.ignore_changes
    for scenario in GENERATION_1:
        assert_primary_database_is(runs[scenario], reference, scenario)
        assert not runs[scenario].has("primary-db-g2")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_primary_database_keeps_backups_for_a_week_or_more(runs: dict[str, Run], scenario: str):
    generation = SCENARIOS[scenario].database_generation
    policy = runs[scenario].named(f"primary-db-g{generation}-retention")
    days = policy.inputs["retentionDays"]
    assert days == int(BASE_CONFIG["zdd:backupRetentionDays"]) >= MIN_BACKUP_RETENTION_DAYS
    assert policy.inputs["policyName"] == "default"
    assert policy.inputs["databaseName"] == f"site-g{generation}"


def test_rollback_with_database_restores_a_new_generation_at_the_restore_point(
    runs: dict[str, Run],
):
    run = runs["rollback-database"]
    old = run.named("primary-db-g1")
    restored = run.named("primary-db-g2")
    assert restored.inputs["createMode"] == "PointInTimeRestore"
    assert restored.inputs["sourceDatabaseId"] == old.id
    assert old.id.endswith("/servers/zdd-test-a1b2c3-sql/databases/site-g1")
    assert restored.inputs["restorePointInTime"] == RESTORE_POINT
    assert restored.inputs["databaseName"] == "site-g2"
    assert restored.protect and not restored.ignore_changes
    assert old.urn in restored.dependencies
    # The old generation is still there, unchanged, and Pulumi will never drop it.
    assert old.inputs == runs["idle"].named("primary-db-g1").inputs
    assert not old.protect and old.retain_on_delete
    assert set(old.ignore_changes) == {"createMode", "sourceDatabaseId", "restorePointInTime"}
    assert run.named("primary-db-g1-retention").retain_on_delete
    # The primary now uses the new generation.
    assert run.outputs["primary_database"] == "site-g2"
    app = run.named("primary-app")
    connection = app.inputs["siteConfig"]["connectionStrings"][0]["connectionString"]
    assert "Initial Catalog=site-g2;" in connection


def test_a_restored_generation_is_the_same_database_from_then_on(runs: dict[str, Run]):
    reference = runs["rollback-database"].named("primary-db-g2")
    for scenario in GENERATION_2:
        assert_primary_database_is(runs[scenario], reference, scenario)
        # Generation 1 is declared only while the deployment that restored goes on; then
        # Pulumi forgets it (retained in Azure, see the rollback test).
        assert runs[scenario].has("primary-db-g1") is (scenario in KEEPS_PREVIOUS_GENERATION)


def test_a_restored_generation_needs_its_restore_point():
    with pytest.raises(Exception, match="restoredFrom"):
        run_program(phase_settings(Phase.IDLE, database_generation=2))


# -- the clone's database: a copy of the primary -------------------------------------------


@pytest.mark.parametrize("scenario", WITH_CLONE)
def test_clone_database_is_a_copy_of_the_primary(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    copy = run.named("clone-db-copy")
    primary = run.named(f"primary-db-g{SCENARIOS[scenario].database_generation}")
    assert copy.type == DATABASE
    assert copy.inputs["createMode"] == "Copy"
    assert copy.inputs["sourceDatabaseId"] == primary.id
    assert copy.inputs["databaseName"] == "site-clone"
    assert copy.inputs["serverName"] == primary.inputs["serverName"]
    assert not copy.protect and not copy.retain_on_delete
    # Made once: a new primary generation never replaces the copy under the clone.
    assert "sourceDatabaseId" in copy.ignore_changes
    assert run.outputs["clone_database"] == "site-clone"


# -- the web apps --------------------------------------------------------------------------


def _connection(app: Registration) -> str:
    (entry,) = app.inputs["siteConfig"]["connectionStrings"]
    assert entry["name"] == "EPiServerDB" and entry["type"] == "SQLAzure"
    assert "siteConfig" in app.secrets, "the connection string must be a secret"
    return str(entry["connectionString"])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_connection_string_names_its_own_database(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    generation = SCENARIOS[scenario].database_generation
    primary = _connection(run.named("primary-app"))
    assert "Server=tcp:zdd-test-a1b2c3-sql.database.windows.net,1433;" in primary
    assert f"Initial Catalog=site-g{generation};" in primary
    assert f"Password={PASSWORD};" in primary
    assert run.outputs["connection_is_secret"] is True
    if EXPECTED[scenario][1]:
        clone = _connection(run.named("clone-app"))
        assert "Initial Catalog=site-clone;" in clone
        assert "site-g" not in clone
        # The clone connects as its own user, never with the administrator's credentials.
        assert f"User ID=zdd_clone;Password={CLONE_PASSWORD};" in clone
        assert ADMIN not in clone and PASSWORD not in clone


@pytest.mark.parametrize("scenario", WITH_CLONE)
def test_a_read_only_clones_database_is_read_only_before_the_clone_starts(
    runs: dict[str, Run], scenario: str
):
    run = runs[scenario]
    access = run.named("clone-db-access")
    assert access.type == DYNAMIC
    assert access.inputs["database"] == "site-clone"
    assert access.inputs["server"] == "zdd-test-a1b2c3-sql.database.windows.net"
    # Given by the administrator (who alone may), whose password stays a secret.
    assert access.inputs["admin_login"] == ADMIN and "admin_password" in access.secrets
    assert access.inputs["read_only"] is True
    # After the copy exists and this machine may reach the server; before the clone's app.
    assert run.named("clone-db-copy").urn in access.dependencies
    assert run.named("azure-sql-operator-0").urn in access.dependencies
    assert access.urn in run.named("clone-app").dependencies
    # The primary's users are the copy's too: none of them is the clone's way in.
    assert not run.has("primary-db-access")


def test_a_read_write_clone_gets_a_user_that_may_write_but_no_administrator():
    settings = phase_settings(Phase.CLONE, mode=Mode.READ_WRITE, accept_data_loss=True)
    run = run_program(settings, deploymentId="d42")
    assert run.named("clone-db-access").inputs["read_only"] is False
    clone = _connection(run.named("clone-app"))
    assert "User ID=zdd_clone;" in clone and PASSWORD not in clone


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_app_settings_carry_version_instance_and_database_mode(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    version, has_clone, _ = EXPECTED[scenario]
    primary = run.named("primary-app")
    assert primary.setting("ZDD_VERSION") == version
    assert primary.setting("ZDD_INSTANCE") == "primary"
    assert primary.setting("ZDD_DATABASE_MODE") == "ReadWrite"
    assert primary.setting("EpiServer__Cms__DataAccess__DatabaseMode") == "ReadWrite"
    assert (
        primary.inputs["siteConfig"]["linuxFxVersion"] == f"DOCKER|{REGISTRY_HOST}/site:{version}"
    )
    assert primary.setting("WEBSITES_PORT") == "8000"
    assert primary.inputs["tags"]["zdd-version"] == version
    if has_clone:
        clone = run.named("clone-app")
        # The clone runs the version before the deployment, read-only.
        assert clone.setting("ZDD_VERSION") == SCENARIOS[scenario].current_version
        assert clone.setting("ZDD_INSTANCE") == "clone"
        assert clone.setting("ZDD_DATABASE_MODE") == "ReadOnly"
        assert clone.setting("EpiServer__Cms__DataAccess__DatabaseMode") == "ReadOnly"
        assert clone.setting("ZDD_DATABASE_NAME") == "site-clone"


def test_clone_is_read_write_only_when_data_loss_is_acknowledged():
    settings = phase_settings(Phase.CLONE, mode=Mode.READ_WRITE, accept_data_loss=True)
    run = run_program(settings, deploymentId="d42")
    clone = run.named("clone-app")
    assert clone.setting("ZDD_DATABASE_MODE") == "ReadWrite"
    assert clone.setting("EpiServer__Cms__DataAccess__DatabaseMode") == "ReadWrite"
    # Its database takes writes the primary never sees: kept as their archive when deleted.
    copy = run.named("clone-db-copy")
    assert copy.inputs["databaseName"] == "site-clone-d42" and copy.retain_on_delete
    read_only = run_program(phase_settings(Phase.CLONE), deploymentId="d42").named("clone-db-copy")
    assert read_only.inputs["databaseName"] == "site-clone" and not read_only.retain_on_delete


def _sites(run: Run) -> list[Registration]:
    """The web apps that run the site (not the front door's refusing origin)."""
    return [a for a in run.of_type(WEB_APP) if a.inputs["tags"]["zdd-instance"] != "read-only"]


@pytest.mark.parametrize("scenario", ["idle", "cutover", "deploy"])
def test_web_apps_are_hardened_and_reachable_only_through_this_front_door(
    runs: dict[str, Run], scenario: str
):
    run = runs[scenario]
    (plan,) = run.of_type(PLAN)
    assert plan.inputs["kind"] == "linux" and plan.inputs["reserved"] is True
    assert plan.inputs["sku"] == {"name": "P0v3"}
    refusing = run.named("front-door-read-only-app").inputs
    assert refusing["serverFarmId"] == plan.id and refusing["httpsOnly"] is True
    assert refusing["siteConfig"]["ipSecurityRestrictionsDefaultAction"] == "Deny"
    (only,) = refusing["siteConfig"]["ipSecurityRestrictions"]
    assert only["headers"] == {"x-azure-fdid": [FRONT_DOOR_ID]}
    for app in _sites(run):
        assert app.inputs["serverFarmId"] == plan.id
        assert app.inputs["httpsOnly"] is True
        assert app.inputs["kind"] == "app,linux"
        config = app.inputs["siteConfig"]
        assert config["alwaysOn"] is True
        assert config["healthCheckPath"] == APP["health"]["path"]
        assert config["minTlsVersion"] == "1.2"
        assert config["ftpsState"] == "Disabled"
        assert config["linuxFxVersion"].startswith(f"DOCKER|{REGISTRY_HOST}/site:")
        assert config["ipSecurityRestrictionsDefaultAction"] == "Deny"
        rule, operator = config["ipSecurityRestrictions"]
        assert operator["ipAddress"] == "203.0.113.7/32"
        assert rule["action"] == "Allow"
        assert rule["tag"] == "ServiceTag"
        assert rule["ipAddress"] == "AzureFrontDoor.Backend"
        assert rule["headers"] == {"x-azure-fdid": [FRONT_DOOR_ID]}


def test_operator_addresses_may_reach_the_apps_and_the_sql_server():
    run = run_program(
        phase_settings(Phase.CLONE), operatorIpAddresses="203.0.113.7, 198.51.100.0/24"
    )
    for app in _sites(run):
        rules = app.inputs["siteConfig"]["ipSecurityRestrictions"]
        assert [r["ipAddress"] for r in rules] == [
            "AzureFrontDoor.Backend",
            "203.0.113.7/32",
            "198.51.100.0/24",
        ]
    ranges = {
        (r.inputs["startIpAddress"], r.inputs["endIpAddress"])
        for r in run.of_type("azure-native:sql:FirewallRule")
    }
    assert ranges == {
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.0", "198.51.100.255"),
    }


def test_clone_can_run_on_its_own_plan():
    run = run_program(phase_settings(Phase.CLONE), cloneOwnPlan="true")
    plans = {r.name: r for r in run.of_type(PLAN)}
    assert set(plans) == {"azure-plan", "clone-plan"}
    assert run.named("clone-app").inputs["serverFarmId"] == plans["clone-plan"].id
    assert run.named("primary-app").inputs["serverFarmId"] == plans["azure-plan"].id
    # The clone's plan goes with the clone.
    assert [
        r.name for r in run_program(phase_settings(Phase.IDLE), cloneOwnPlan="true").of_type(PLAN)
    ] == ["azure-plan"]


def test_a_package_runs_only_on_a_runtime_that_can_run_from_one():
    package = {"app": app_spec(releases="https://r.example.net/s-{version}.zip")}
    # Defect 4: "Run from package is not supported for Python apps".
    for runtime in ("<unset>", "PYTHON|3.11", "JAVA|17-java17"):
        with pytest.raises(pulumi.RunError, match="use a container image"):
            run_program(phase_settings(Phase.IDLE), config={**package, "linuxRuntime": runtime})
    run = run_program(
        phase_settings(Phase.DEPLOY), config={**package, "linuxRuntime": "DOTNETCORE|8.0"}
    )
    config = run.named("primary-app").inputs["siteConfig"]
    assert config["linuxFxVersion"] == "DOTNETCORE|8.0"
    assert run.named("primary-app").setting("WEBSITE_RUN_FROM_PACKAGE") == (
        "https://r.example.net/s-v2.zip"
    )


def test_images_are_pulled_from_a_private_registry_with_a_managed_identity(runs: dict[str, Run]):
    run = runs["cutover"]
    identity = run.named("azure-pull-identity")
    grant = run.named("azure-acr-pull")
    assert grant.inputs["scope"] == REGISTRY_ID
    assert grant.inputs["roleDefinitionId"] == (
        f"{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
        "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    )
    assert grant.inputs["principalType"] == "ServicePrincipal"
    assert grant.inputs["principalId"] == "principal-of-zdd-test-a1b2c3-pull"
    for app in _sites(run):
        assert app.inputs["identity"] == {
            "type": "UserAssigned",
            "userAssignedIdentities": [identity.id],
        }
        config = app.inputs["siteConfig"]
        assert config["acrUseManagedIdentityCreds"] is True
        assert config["acrUserManagedIdentityID"] == "client-of-zdd-test-a1b2c3-pull"
        # The identity holds AcrPull before the app's first pull.
        assert grant.urn in app.dependencies


def test_web_apps_reach_sql_from_their_subnet_not_through_every_azure_service(
    runs: dict[str, Run],
):
    run = runs["cutover"]
    rules = run.of_type("azure-native:sql:FirewallRule")
    assert ("0.0.0.0", "0.0.0.0") not in {
        (r.inputs["startIpAddress"], r.inputs["endIpAddress"]) for r in rules
    }
    subnet = run.named("azure-apps-subnet")
    assert subnet.inputs["serviceEndpoints"] == [{"service": "Microsoft.Sql"}]
    assert subnet.inputs["delegations"][0]["serviceName"] == "Microsoft.Web/serverFarms"
    assert run.named("azure-apps-subnet-sql").inputs["virtualNetworkSubnetId"] == subnet.id
    for app in _sites(run):
        assert app.inputs["virtualNetworkSubnetId"] == subnet.id
        assert app.inputs["siteConfig"]["vnetRouteAllEnabled"] is True
    # The "Azure services" rule only when the stack opts in (the policy then reports it).
    opted = run_program(phase_settings(Phase.IDLE), allowAzureServices="true")
    assert opted.named("azure-sql-azure-services").inputs["startIpAddress"] == "0.0.0.0"


def _create_timeout(run: Run, name: str) -> str:
    return run.named(name).create_timeout


def test_copy_and_restore_wait_as_long_as_azure_takes(runs: dict[str, Run]):
    # Pulumi's default create timeout is 2 hours; a restore can take up to 12.
    monitor_timeouts = {
        name: _create_timeout(runs[scenario], name)
        for scenario, name in (("clone", "clone-db-copy"), ("rollback-database", "primary-db-g2"))
    }
    assert monitor_timeouts == {"clone-db-copy": "12h", "primary-db-g2": "12h"}


# -- Front Door ----------------------------------------------------------------------------


def _site_groups(run: Run) -> dict[str, Registration]:
    groups = run.of_type("azure-native:cdn:AFDOriginGroup")
    return {
        r.inputs["originGroupName"]: r for r in groups if r.inputs["originGroupName"] != "readonly"
    }


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_public_traffic_moves_by_one_route_change(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    _, has_clone, traffic = EXPECTED[scenario]
    groups = _site_groups(run)
    assert set(groups) == ({"primary", "clone"} if has_clone else {"primary"})
    for role, group in groups.items():
        # One origin per group, always enabled, no health probes (they would count as traffic).
        (origin,) = [r for r in run.of_type(ORIGIN) if r.inputs["originGroupName"] == role]
        assert origin.inputs["enabledState"] == "Enabled"
        assert origin.inputs["hostName"] == f"zdd-test-a1b2c3-{role}.azurewebsites.net"
        assert "healthProbeSettings" not in group.inputs
    routes = {r.name: r for r in run.of_type(ROUTE)}
    # The switch: the public route names the group of the site with the traffic.
    assert routes["front-door-public-route"].inputs["originGroup"] == {"id": groups[traffic].id}
    # The preview route always reaches the primary.
    assert routes["front-door-preview-route"].inputs["originGroup"] == {"id": groups["primary"].id}


def test_cutover_is_one_route_change_that_carries_the_edge_refusal(runs: dict[str, Run]):
    before, after = runs["clone"], runs["cutover"]
    front_door = ("azure-native:cdn:", WAF)
    changed = {
        r.name
        for r in after.registrations
        if r.type.startswith(front_door) and r.inputs != before.named(r.name).inputs
    }
    # The origin group and the rule set that refuses writes move together: one global change,
    # one deploymentStatus to watch, no order between two changes to hope for.
    assert changed == {"front-door-public-route"}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_writes_are_refused_at_the_edge_while_a_read_only_clone_may_serve(
    runs: dict[str, Run], scenario: str
):
    run = runs[scenario]
    rule = run.named("front-door-read-only-writes").inputs
    (condition,) = rule["conditions"]
    assert condition["name"] == "RequestMethod"
    assert condition["parameters"]["negateCondition"] is True
    assert condition["parameters"]["matchValues"] == ["GET", "HEAD", "OPTIONS"]
    (action,) = rule["actions"]
    assert action["name"] == "RouteConfigurationOverride"
    override = action["parameters"]["originGroupOverride"]
    refusing_group = run.named("front-door-read-only-origins")
    assert override["originGroup"] == {"id": refusing_group.id}
    assert "cacheConfiguration" not in action["parameters"]  # a refusal is never cached
    (origin,) = [r for r in run.of_type(ORIGIN) if r.inputs["originGroupName"] == "readonly"]
    assert origin.inputs["hostName"] == "zdd-test-a1b2c3-readonly.azurewebsites.net"
    phase = SCENARIOS[scenario].phase
    refusing = phase in (Phase.CUTOVER, Phase.DEPLOY, Phase.RETURN, Phase.WITHDRAW)
    route = run.named("front-door-public-route")
    rule_set = run.named("front-door-read-only-rules")
    assert route.inputs["ruleSets"] == ([{"id": rule_set.id}] if refusing else [])
    assert run.named("front-door-read-only-writes").urn in route.dependencies
    # The preview route (operators, the primary) never carries it.
    assert not run.named("front-door-preview-route").inputs.get("ruleSets")


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js, as App Service runs it")
def test_the_refusing_origin_answers_503_with_retry_after(tmp_path: Path):
    run = run_program(phase_settings(Phase.CUTOVER))
    config = run.named("front-door-read-only-app").inputs["siteConfig"]
    assert config["linuxFxVersion"].startswith("NODE|")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # what App Service runs as the startup command, through a shell
        ["sh", "-c", config["appCommandLine"]], env={"PATH": "/usr/bin:/bin", "PORT": str(port)}
    )
    try:
        response = None
        for _ in range(100):
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/articles", content=b"x")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert response is not None
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "60"
        assert "read-only" in response.text
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_a_read_write_clone_takes_writes_through_the_edge():
    settings = phase_settings(Phase.CUTOVER, mode=Mode.READ_WRITE, accept_data_loss=True)
    assert run_program(settings).named("front-door-public-route").inputs["ruleSets"] == []


def test_the_preview_endpoint_answers_the_operator_only(runs: dict[str, Run]):
    run = runs["deploy"]
    waf = run.named("front-door-preview-waf").inputs
    assert waf["sku"] == {"name": "Standard_AzureFrontDoor"}
    assert waf["policySettings"]["mode"] == "Prevention"
    (rule,) = waf["customRules"]["rules"]
    assert (rule["action"], rule["enabledState"]) == ("Block", "Enabled")
    (condition,) = rule["matchConditions"]
    # The TCP peer (SocketAddr), not X-Forwarded-For (RemoteAddr), which a client can forge.
    assert condition["matchVariable"] == "SocketAddr"
    assert condition["operator"] == "IPMatch" and condition["negateCondition"] is True
    assert condition["matchValue"] == ["203.0.113.7/32"]
    association = run.named("front-door-preview-waf-association").inputs["parameters"]
    endpoint = run.named("front-door-preview-endpoint")
    assert association["wafPolicy"] == {"id": run.named("front-door-preview-waf").id}
    assert association["associations"][0]["domains"] == [{"id": endpoint.id}]


def test_a_custom_domain_is_the_edges_and_no_app_binds_it():
    run = run_program(phase_settings(Phase.CUTOVER), customDomain="www.example.com")
    # App Service allows a host name once per deployment unit: neither app binds it, so both
    # can serve it; each is reached by its own name, whose certificate App Service provides.
    assert run.of_type("azure-native:web:WebAppHostNameBinding") == []
    for origin in run.of_type(ORIGIN):
        assert origin.inputs["originHostHeader"] == origin.inputs["hostName"]
        assert origin.inputs["hostName"].endswith(".azurewebsites.net")
        assert origin.inputs["enforceCertificateNameCheck"] is True
    domain = run.named("front-door-custom-domain")
    assert domain.inputs["hostName"] == "www.example.com"
    assert domain.inputs["tlsSettings"]["certificateType"] == "ManagedCertificate"
    route = run.named("front-door-public-route")
    assert route.inputs["customDomains"] == [{"id": domain.id}]
    # The sites learn the visitors' host from X-Forwarded-Host, or from this setting.
    for app in _sites(run):
        assert app.setting("ZDD_PUBLIC_HOST") == "www.example.com"
    plain = run_program(phase_settings(Phase.CUTOVER))
    assert all("ZDD_PUBLIC_HOST" not in str(a.inputs) for a in _sites(plain))


def test_front_door_standard_profile_endpoints_and_routes(runs: dict[str, Run]):
    run = runs["cutover"]
    profile = run.named("azure-frontdoor")
    assert profile.inputs["sku"] == {"name": "Standard_AzureFrontDoor"}
    assert profile.inputs["location"] == "global"
    endpoints = {r.inputs["endpointName"] for r in run.of_type("azure-native:cdn:AFDEndpoint")}
    assert endpoints == {"zdd-test-a1b2c3-public", "zdd-test-a1b2c3-preview"}
    for route in run.of_type(ROUTE):
        assert route.inputs["patternsToMatch"] == ["/*"]
        assert route.inputs["forwardingProtocol"] == "HttpsOnly"
        assert route.inputs["linkToDefaultDomain"] == "Enabled"
        assert "cacheConfiguration" not in route.inputs  # identity answers are never cached
    assert run.outputs["public_url"] == "https://zdd-test-a1b2c3-public-h7c2d5e.z01.azurefd.net"
    assert run.outputs["preview_url"] == "https://zdd-test-a1b2c3-preview-h7c2d5e.z01.azurefd.net"
    assert run.outputs["primary_url"] == "https://zdd-test-a1b2c3-primary.azurewebsites.net"
    # What the driver's switch and drain gates poll.
    front_door = run.outputs["front_door"]
    assert front_door["public_route_id"] == run.named("front-door-public-route").id
    assert front_door["profile_id"] == profile.id
    assert front_door["origin_hosts"] == {
        "primary": "zdd-test-a1b2c3-primary.azurewebsites.net",
        "clone": "zdd-test-a1b2c3-clone.azurewebsites.net",
    }
    assert (front_door["settle_seconds"], front_door["quiet_seconds"]) == (240, 300)
    assert (front_door["switch_floor_seconds"], front_door["switch_timeout_seconds"]) == (
        1200,
        2700,
    )
    # The drain counts the public endpoint's requests only; the heartbeat is the health path.
    assert front_door["public_endpoint_host"] == "zdd-test-a1b2c3-public-h7c2d5e.z01.azurefd.net"
    assert front_door["heartbeat_path"] == APP["health"]["path"]


# -- the migration hook --------------------------------------------------------------------

# scenario -> (schema version, generation) the migration is triggered by
MIGRATION = {
    "idle": ("v1", 1),
    "clone": ("v1", 1),
    "cutover": ("v1", 1),
    "deploy": ("v2", 1),
    "return": ("v2", 1),
    "idle-after": ("v2", 1),
    "withdraw": ("v1", 1),
    "rollforward": ("v3", 1),
    "rollback-code": ("v2", 1),  # the database stays migrated: no new run
    "idle-after-rollback-code": ("v2", 1),
    "rollback-database": ("v1", 2),  # runs against the restored generation
    "return-after-rollback-database": ("v1", 2),
    "idle-after-rollback-database": ("v1", 2),
    "clone-on-generation-2": ("v1", 2),
    "deploy-on-generation-2": ("v2", 2),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_migration_runs_on_the_primary_database_only(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    (migration,) = run.of_type(COMMAND)
    assert migration.name == "primary-db-migration"
    # Retried while the firewall rule for this machine applies (up to five minutes).
    assert migration.inputs["create"] == retrying("python -m site_migrations upgrade", 6, 60)
    version, generation = MIGRATION[scenario]
    assert migration.inputs["triggers"] == [version, generation]
    environment = migration.inputs["environment"]
    assert "environment" in migration.secrets
    assert environment["ZDD_SCHEMA_VERSION"] == version
    assert environment["ZDD_DATABASE_GENERATION"] == str(generation)
    assert environment["ZDD_DATABASE_NAME"] == f"site-g{generation}"
    connection = environment["ZDD_DATABASE_CONNECTION"]
    assert f"Initial Catalog=site-g{generation};" in connection
    # Its own login, never the SQL administrator's.
    assert f"User ID=migrator;Password={MIGRATION_PASSWORD};" in connection
    assert PASSWORD not in connection and ADMIN not in connection
    # Never the copy: no command anywhere sees the clone's database.
    for command in run.of_type(COMMAND):
        assert "site-clone" not in repr(command.inputs)
    # It runs after its database exists and this machine's firewall rule.
    assert run.named(f"primary-db-g{generation}").urn in migration.dependencies
    assert run.named("azure-sql-operator-0").urn in migration.dependencies


def test_retrying_runs_the_command_until_it_succeeds(tmp_path):
    marker = tmp_path / "tries"
    command = f"echo x >> {marker}; [ $(wc -l < {marker}) -ge 3 ]"
    done = subprocess.run(["sh", "-c", retrying(command, 5, 0)], check=False)
    assert done.returncode == 0 and marker.read_text().count("x") == 3
    marker.unlink()
    assert subprocess.run(["sh", "-c", retrying(command, 2, 0)], check=False).returncode == 1


def test_migration_reruns_only_for_a_new_schema_version_or_generation(runs: dict[str, Run]):
    def environment(scenario: str) -> dict[str, Any]:
        (migration,) = runs[scenario].of_type(COMMAND)
        return dict(migration.inputs)

    # Phases that do not migrate declare the very same command (no re-run).
    assert environment("idle") == environment("clone") == environment("cutover")
    assert environment("deploy") == environment("return") == environment("rollback-code")
    assert environment("deploy") != environment("cutover")


def test_no_migration_hook_without_a_migration_command():
    run = run_program(phase_settings(Phase.DEPLOY), app=app_spec(migrate=None))
    assert not run.of_type(COMMAND)
    # The restore point is still recorded before the new code reaches the primary.
    point = run.named(f"primary-db{RESTORE_POINT_SUFFIX}")
    assert point.urn in run.named("primary-app").dependencies


# -- the site is its app spec, as on the local target -----------------------------------------


def test_the_site_is_what_its_app_spec_says():
    spec = app_spec(
        releases=f"{REGISTRY_HOST}/shop:release-{{version}}",
        start=["gunicorn", "--bind", "0.0.0.0:{port}", "shop.wsgi"],
        env={"SHOP_MODE": "{database_mode}", "SHOP_DB": "{database}"},
        health={"path": "/status", "timeoutSeconds": 900},
    )
    run = run_program(phase_settings(Phase.CLONE), app=spec, containerPort="8080")
    for name, mode, version in (
        ("primary-app", "ReadWrite", "v1"),
        ("clone-app", "ReadOnly", "v1"),
    ):
        app = run.named(name)
        config = app.inputs["siteConfig"]
        # App Service and the driver's gates probe the same path: the spec's.
        assert config["healthCheckPath"] == "/status"
        assert config["linuxFxVersion"] == f"DOCKER|{REGISTRY_HOST}/shop:release-{version}"
        assert config["appCommandLine"] == "gunicorn --bind 0.0.0.0:8080 shop.wsgi"
        assert app.setting("SHOP_MODE") == mode
        assert app.setting("SHOP_DB") == ("site-g1" if name == "primary-app" else "site-clone")
    # The migration runs the spec's argv (no shell word splitting of a value) with its env.
    (migration,) = run_program(phase_settings(Phase.DEPLOY), app=app_spec(
        migrate=["/opt/shop/migrate", "--to", "{version}", "it's"], env={"SHOP_DB": "{database}"}
    )).of_type(COMMAND)  # fmt: skip
    assert migration.inputs["create"] == retrying("/opt/shop/migrate --to v2 'it'\"'\"'s'", 6, 60)
    assert migration.inputs["environment"]["SHOP_DB"] == "site-g1"


def test_without_a_start_the_image_starts_itself():
    run = run_program(phase_settings(Phase.IDLE))
    assert "appCommandLine" not in run.named("primary-app").inputs["siteConfig"]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("<unset>", "zdd:app is not set: an Azure stack runs the site its app spec describes"),
        (
            app_spec(releases="/srv/site/releases/{version}", start=["bin/site"]),
            "is a folder on this machine",
        ),
        (app_spec(releases="http://r.example.net/s-{version}.zip"), "must be https://"),
        (app_spec(start=["site", "--db", "{database_url}"]), "field `start`"),
        (app_spec(migrate=["bin/migrate"]), "`migrate` program 'bin/migrate' must be an absolute"),
        (app_spec(env={"ZDD_VERSION": "x"}), "ZDD_VERSION is set by the platform"),
        ("not json", "zdd:app is not a JSON object"),
    ],
)
def test_a_spec_azure_cannot_run_is_refused_naming_the_field(app: str, message: str):
    with pytest.raises(pulumi.RunError, match=re.escape(message)):
        run_program(phase_settings(Phase.IDLE), app=app)


def test_warmup_and_smoke_hooks_run_against_each_site():
    run = run_program(
        phase_settings(Phase.CLONE), warmupCommand="./warmup.sh", smokeCommand="./smoke.sh"
    )
    names = {r.name for r in run.of_type(COMMAND)}
    assert names == {
        "primary-db-migration",
        "primary-warmup",
        "primary-smoke",
        "clone-warmup",
        "clone-smoke",
    }
    warmup = run.named("clone-warmup")
    assert warmup.inputs["environment"]["ZDD_SITE_URL"] == (
        "https://zdd-test-a1b2c3-clone.azurewebsites.net"
    )
    assert warmup.inputs["triggers"] == ["v1", "ReadOnly"]
    assert warmup.urn in run.named("clone-smoke").dependencies


# -- the shared resources and the config ---------------------------------------------------


def test_sql_server_and_resource_group_are_protected(runs: dict[str, Run]):
    run = runs["idle"]
    server = run.named("azure-sql")
    assert server.protect and run.named("azure-rg").protect
    assert server.inputs["administratorLogin"] == ADMIN
    assert server.inputs["administratorLoginPassword"] == PASSWORD
    assert "administratorLoginPassword" in server.secrets
    assert server.inputs["minimalTlsVersion"] == "1.2"


def test_entra_administrator_is_optional():
    run = run_program(
        phase_settings(Phase.IDLE),
        sqlEntraAdminLogin="sql-admins",
        sqlEntraAdminObjectId="11111111-2222-3333-4444-555555555555",
    )
    administrators = run.named("azure-sql").inputs["administrators"]
    assert administrators["login"] == "sql-admins"
    assert administrators["administratorType"] == "ActiveDirectory"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sqlAdminPassword": "<unset>"}, "zdd:sqlAdminPassword is not set"),
        ({"operatorIpAddresses": "<unset>"}, "zdd:operatorIpAddresses is not set"),
        ({"containerRegistryId": "acme.azurecr.io"}, "not a container registry's id"),
        ({"customDomain": "not a domain"}, "zdd:customDomain"),
        ({"migrationLogin": "<unset>"}, "never run as the SQL administrator"),
        ({"switchSettleSeconds": "0"}, "zdd:switchSettleSeconds 0 must be 1 or more"),
        ({"backupRetentionDays": "3"}, "must be 7 to 35"),
        ({"namePrefix": "Bad_Prefix"}, "zdd:namePrefix"),
        ({"operatorIpAddresses": "example.com"}, "not an IPv4 address"),
        ({"sqlEntraAdminLogin": "admins"}, "sqlEntraAdminObjectId"),
    ],
)
def test_wrong_config_is_refused_with_a_clear_message(config: dict[str, str], message: str):
    with pytest.raises(pulumi.RunError, match=message.replace("{", r"\{").replace("}", r"\}")):
        run_program(phase_settings(Phase.IDLE), config=config)


def test_restore_point_is_handed_to_azure_as_an_iso_timestamp():
    assert restore_point_in_time("2025-03-01T10:15:00Z") == "2025-03-01T10:15:00Z"
    assert restore_point_in_time("2025-03-01T11:15:00+01:00") == "2025-03-01T10:15:00Z"
    assert restore_point_in_time("2025-03-01T10:15:00") == "2025-03-01T10:15:00Z"  # UTC
    with pytest.raises(pulumi.RunError, match="not a point in time"):
        restore_point_in_time("rp1")
    with pytest.raises(pulumi.RunError, match="not a point in time"):
        run_program(phase_settings(Phase.IDLE, database_generation=2, restored_from="yesterday"))


def test_every_component_waits_for_the_phase_guard():
    run = run_program(phase_settings(Phase.CLONE), guard=True)
    guard = run.named("phase-guard").urn
    components = [r for r in run.registrations if r.type.startswith("zdd:azure:")]
    assert {r.type for r in components} == {
        "zdd:azure:Foundation",
        "zdd:azure:Database",
        "zdd:azure:Site",
        "zdd:azure:FrontDoor",
    }
    assert all(guard in r.dependencies for r in components)


def test_runs_do_not_share_state():
    first = run_program(phase_settings(Phase.IDLE))
    second = run_program(phase_settings(Phase.CLONE))
    assert not first.has("clone-app") and second.has("clone-app")
    assert dataclasses.asdict(first.named("primary-db-g1")) == dataclasses.asdict(
        second.named("primary-db-g1")
    )


# -- the example stack ---------------------------------------------------------------------

EXAMPLE = ROOT / "stacks" / "Pulumi.azure-example.yaml"


class RecordingConfig(pulumi.Config):
    """The `zdd` config, noting every key the target asks for."""

    def __init__(self) -> None:
        super().__init__("zdd")
        self.asked: set[str] = set()

    def full_key(self, key: str) -> str:
        self.asked.add(key)
        return super().full_key(key)


def test_example_stack_documents_every_key_and_runs():
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^\s*#?\s*zdd:(\w+):", text, flags=re.MULTILINE))
    active = yaml.safe_load(text)["config"]
    config = RecordingConfig()
    run_program(
        phase_settings(Phase.IDLE),
        config={key.removeprefix("zdd:"): str(value) for key, value in active.items()},
    )
    pulumi.runtime.set_all_config(
        {**BASE_CONFIG, **{k: str(v) for k, v in active.items()}},
        secret_keys=SECRET_KEYS,
    )
    azure_target(config)
    assert config.asked, "the target reads its keys through pulumi.Config"
    assert config.asked - documented == set()
    assert set(DECIDING_KEYS) - documented == set()
