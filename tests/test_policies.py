"""The policy pack's checks (policies/rules.py, local.py, azure.py), fast and without the engine.

Every policy has a passing and a failing case. The resources come from the real programs run
under Pulumi's mocks (the local target's dynamic resources and the Azure target's azure-native
resources, with the inputs and options the engine would see), so the pack is tested against
exactly what the program declares; failing cases change one property of such a resource.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pulumi
import pytest
from pulumi.runtime import settings as runtime_settings
from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from infra.azure.settings import MIN_TLS_VERSION
from infra.program import build
from infra.targets import target_for
from policies.azure import AFD_ORIGIN, FIREWALL_RULE, FTP_ALLOWED, IPV6_FIREWALL_RULE, MIN_TLS
from policies.model import DYNAMIC, Resource, StackConfig
from policies.rules import POLICIES, evaluate
from tests.helpers.azure_mocks import (
    BASE_CONFIG,
    AzureMocks,
    RecordingMonitor,
    run_program,
)
from tests.helpers.commands import ROOT
from tests.helpers.policy_checks import (
    changed,
    check,
    config_for,
    named,
    replaced,
    resource_of,
    stack_check,
)
from tests.helpers.settings import RESTORE_POINT, SCENARIOS, phase_settings, restored
from zdd.appspec import parse_file_text
from zdd.environment import STATE_ROOT, Environment, stack_dir
from zdd.phases import (
    DATABASE_MODE_SETTINGS,
    Mode,
    Phase,
    PhaseSettings,
    declare,
)

# The folder the program derives for the mocks' stack "test".
STATE_DIR = str(stack_dir(ROOT / STATE_ROOT, "test"))
SAMPLE_APP = Environment(ROOT).sample_app
LOCAL_CONFIG = {
    "zdd:target": "local",
    "zdd:stateDir": STATE_DIR,
    "zdd:basePort": "26100",
    "zdd:app": parse_file_text(SAMPLE_APP.read_text(), str(SAMPLE_APP.parent)).to_config(),
}
LOCAL_RESTORE_POINT = "rp-20250301T101500"


# -- the programs under mocks ------------------------------------------------------------------


class LocalMocks(AzureMocks):
    """The local providers' outputs: a process answers on its port."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, state = super().new_resource(args)
        if "port" in state:
            state["url"] = f"http://127.0.0.1:{int(state['port'])}"
        return resource_id, state


def local_resources(settings: PhaseSettings) -> list[Resource]:
    """What the local program declares for `settings`, under mocks."""
    mocks = LocalMocks()
    monitor = RecordingMonitor(mocks)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks, project="smooth-deploy", stack="test", preview=False, monitor=monitor
    )
    pulumi.runtime.set_all_config(dict(LOCAL_CONFIG))

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any]:
        built = build(declare(settings), target_for(pulumi.Config("zdd")))
        return pulumi.Output.from_input(built.front_door.public_url)

    program()
    return [resource_of(r) for r in monitor.registrations]


def azure_resources(settings: PhaseSettings, **config: str) -> list[Resource]:
    return [resource_of(r) for r in run_program(settings, config=config).registrations]


def local(phase: Phase, **overrides: Any) -> PhaseSettings:
    return phase_settings(phase, point=LOCAL_RESTORE_POINT, **overrides)


LOCAL_RESTORED = restored(LOCAL_RESTORE_POINT)
LOCAL_SCENARIOS: dict[str, PhaseSettings] = {
    "idle": local(Phase.IDLE),
    "clone": local(Phase.CLONE),
    "cutover": local(Phase.CUTOVER),
    "deploy": local(Phase.DEPLOY),
    "return": local(Phase.RETURN),
    "read-write-clone": local(Phase.CUTOVER, mode=Mode.READ_WRITE, accept_data_loss=True),
    "rollback-database": local(
        Phase.DEPLOY, target_version="v1", migrate_to="v1", **LOCAL_RESTORED
    ),
    "idle-after-rollback-database": local(Phase.IDLE, **LOCAL_RESTORED),
}
AZURE_SCENARIOS: dict[str, PhaseSettings] = {
    **SCENARIOS,
    "read-write-clone": phase_settings(Phase.CUTOVER, mode=Mode.READ_WRITE, accept_data_loss=True),
}


@pytest.fixture(scope="module")
def local_runs() -> dict[str, list[Resource]]:
    return {name: local_resources(settings) for name, settings in LOCAL_SCENARIOS.items()}


@pytest.fixture(scope="module")
def azure_runs() -> dict[str, list[Resource]]:
    return {name: azure_resources(settings) for name, settings in AZURE_SCENARIOS.items()}


def local_config(scenario: str = "cutover", **values: str | None) -> StackConfig:
    return _with(config_for(LOCAL_SCENARIOS[scenario], LOCAL_CONFIG), **values)


def azure_config(scenario: str = "cutover", **values: str | None) -> StackConfig:
    return _with(config_for(AZURE_SCENARIOS[scenario], BASE_CONFIG), **values)


def _with(config: StackConfig, **values: str | None) -> StackConfig:
    """`config` with `zdd:<key>` values set (None removes one)."""
    merged = dict(config.values)
    for key, value in values.items():
        if value is None:
            merged.pop(f"zdd:{key}", None)
        else:
            merged[f"zdd:{key}"] = value
    return dataclasses.replace(config, values=merged)


# -- the programs pass the pack in every phase and recovery -----------------------------------


@pytest.mark.parametrize("scenario", list(LOCAL_SCENARIOS))
def test_local_program_passes_every_policy(local_runs: dict[str, list[Resource]], scenario: str):
    config = config_for(LOCAL_SCENARIOS[scenario], LOCAL_CONFIG)
    assert evaluate(local_runs[scenario], config) == {}


@pytest.mark.parametrize("scenario", list(AZURE_SCENARIOS))
def test_azure_program_passes_every_policy(azure_runs: dict[str, list[Resource]], scenario: str):
    config = config_for(AZURE_SCENARIOS[scenario], BASE_CONFIG)
    assert evaluate(azure_runs[scenario], config) == {}


def test_azure_program_with_operator_addresses_and_own_clone_plan_passes():
    settings = AZURE_SCENARIOS["cutover"]
    extra = {"operatorIpAddresses": "203.0.113.7,198.51.100.0/24", "cloneOwnPlan": "true"}
    resources = azure_resources(settings, **extra)
    config = config_for(settings, {**BASE_CONFIG, **{f"zdd:{k}": v for k, v in extra.items()}})
    assert evaluate(resources, config) == {}


def test_the_pack_names_its_policies_once_and_checks_each():
    names = [spec.name for spec in POLICIES]
    assert len(names) == len(set(names))
    assert all((spec.check is None) != (spec.stack_check is None) for spec in POLICIES)
    assert all(spec.description.endswith(".") for spec in POLICIES)


def test_the_pack_agrees_with_the_programs_constants():
    # The database-mode settings and the backup retention minimum have one home (zdd.phases).
    assert tuple(int(p) for p in MIN_TLS_VERSION.split(".")) == MIN_TLS


# -- clone-read-only ---------------------------------------------------------------------------


def test_clone_read_only_local(local_runs: dict[str, list[Resource]]):
    clone = named(local_runs["cutover"], "clone-process")
    assert clone.props["database_mode"] == "ReadOnly"
    assert check("clone-read-only", clone, local_config()) == []
    writable = changed(clone, "database_mode", "ReadWrite")
    [problem] = check("clone-read-only", writable, local_config())
    assert "does not acknowledge data loss" in problem
    # Either half of the acknowledgement alone is not enough.
    assert check("clone-read-only", writable, local_config(acceptDataLoss="true"))
    assert check("clone-read-only", writable, local_config(mode="read-write"))
    assert check("clone-read-only", changed(clone, "database_mode", "Readonly"), local_config())


def test_clone_read_write_needs_a_plain_acknowledgement(local_runs: dict[str, list[Resource]]):
    clone = named(local_runs["read-write-clone"], "clone-process")
    assert clone.props["database_mode"] == "ReadWrite"
    acknowledged = local_config("read-write-clone")
    assert check("clone-read-only", clone, acknowledged) == []
    assert check("clone-read-only", clone, _with(acknowledged, acceptDataLoss="TRUE")) == []
    secret = dataclasses.replace(acknowledged, secret_keys=frozenset({"zdd:acceptDataLoss"}))
    [problem] = check("clone-read-only", clone, secret)
    assert "zdd:acceptDataLoss is a secret" in problem
    # Without the stack's config (an engine that does not pass it), ReadWrite is refused.
    assert check("clone-read-only", clone, StackConfig(known=False))


def test_clone_read_only_ignores_the_primary(local_runs: dict[str, list[Resource]]):
    primary = named(local_runs["cutover"], "primary-process")
    assert primary.props["database_mode"] == "ReadWrite"
    assert check("clone-read-only", primary, local_config()) == []


def test_clone_read_only_azure(azure_runs: dict[str, list[Resource]]):
    clone = named(azure_runs["cutover"], "clone-app")
    assert check("clone-read-only", clone, azure_config()) == []
    writable = named(azure_runs["read-write-clone"], "clone-app")
    problems = check("clone-read-only", writable, azure_config())
    assert len(problems) == len(DATABASE_MODE_SETTINGS)
    assert check("clone-read-only", writable, azure_config("read-write-clone")) == []
    # One of the two settings left ReadWrite is enough to refuse.
    settings = copy.deepcopy(clone.props["siteConfig"]["appSettings"])
    for pair in settings:
        if pair["name"] == "ZDD_DATABASE_MODE":
            pair["value"] = "ReadWrite"
    half = changed(clone, "siteConfig.appSettings", settings)
    [problem] = check("clone-read-only", half, azure_config())
    assert problem.startswith("clone-app: ZDD_DATABASE_MODE is ReadWrite")
    assert (
        check("clone-read-only", named(azure_runs["cutover"], "primary-app"), azure_config()) == []
    )


# -- primary-database-protected and primary-database-present -----------------------------------


def test_primary_database_local(local_runs: dict[str, list[Resource]]):
    database = named(local_runs["deploy"], "primary-db-file")
    assert database.props["path"] == f"{STATE_DIR}/primary-g1.sqlite"
    assert check("primary-database-protected", database, local_config()) == []
    # A new generation without a rollback with database would replace it.
    [problem] = check("primary-database-protected", database, local_config(databaseGeneration="2"))
    assert "would replace it" in problem
    moved = changed(database, "path", "/elsewhere/primary-g1.sqlite")
    assert "outside zdd:stateDir" in check("primary-database-protected", moved, local_config())[0]
    copied = changed(database, "source", f"{STATE_DIR}/clone-g1.sqlite")
    assert (
        "never made from another one"
        in check("primary-database-protected", copied, local_config())[0]
    )
    other = changed(database, "path", f"{STATE_DIR}/site.sqlite")
    assert check("primary-database-protected", other, local_config())
    baseline = changed(database, "keep_baseline", True)
    assert "would replace it" in check("primary-database-protected", baseline, local_config())[0]


def test_primary_database_local_rollback_with_database(local_runs: dict[str, list[Resource]]):
    database = named(local_runs["rollback-database"], "primary-db-file")
    assert database.props["source"] == f"{STATE_DIR}/restore-{LOCAL_RESTORE_POINT}.sqlite"
    config = local_config("rollback-database")
    assert check("primary-database-protected", database, config) == []
    elsewhere = changed(database, "source", f"{STATE_DIR}/restore-rp-other.sqlite")
    assert "not from the restore point" in check("primary-database-protected", elsewhere, config)[0]
    fresh = changed(database, "source", None)
    assert "has no source" in check("primary-database-protected", fresh, config)[0]
    unrecorded = local_config("rollback-database", restoredFrom=None)
    assert "needs zdd:restoredFrom" in check("primary-database-protected", database, unrecorded)[0]


def test_primary_database_azure(azure_runs: dict[str, list[Resource]]):
    database = named(azure_runs["deploy"], "primary-db-g1")
    assert database.protect
    assert check("primary-database-protected", database, azure_config("deploy")) == []
    unprotected = dataclasses.replace(database, protect=False)
    [problem] = check("primary-database-protected", unprotected, azure_config("deploy"))
    assert "must be protected" in problem
    restored = changed(database, "createMode", "Copy")
    assert check("primary-database-protected", restored, azure_config("deploy"))


def test_primary_database_azure_rollback_with_database(azure_runs: dict[str, list[Resource]]):
    resources = azure_runs["rollback-database"]
    config = azure_config("rollback-database")
    old, new = named(resources, "primary-db-g1"), named(resources, "primary-db-g2")
    assert not old.protect and new.protect
    assert check("primary-database-protected", old, config) == []
    assert check("primary-database-protected", new, config) == []
    # The unprotected old generation is legal only while the rollback that replaced it goes on.
    later = _with(config, restorePoint="2025-05-01T00:00:00Z")
    assert "unprotected outside" in check("primary-database-protected", old, later)[0]
    # A new generation is a restore of the previous one, to the recorded point in time.
    wrong_time = changed(new, "restorePointInTime", "2025-03-02T00:00:00Z")
    assert (
        "not to the recorded restore point"
        in check("primary-database-protected", wrong_time, config)[0]
    )
    assert check("primary-database-protected", changed(new, "createMode", "Default"), config)
    other = changed(new, "sourceDatabaseId", new.props["sourceDatabaseId"].replace("-g1", "-g7"))
    assert "must restore generation 1" in check("primary-database-protected", other, config)[0]
    assert config.get("restoredFrom") == RESTORE_POINT


def test_primary_database_present(
    local_runs: dict[str, list[Resource]], azure_runs: dict[str, list[Resource]]
):
    for scenario in ("idle", "cutover"):
        local_resources_ = local_runs[scenario]
        assert stack_check("primary-database-present", local_resources_, local_config()) == []
        without = [r for r in local_resources_ if r.name != "primary-db-file"]
        [problem] = stack_check("primary-database-present", without, local_config())
        assert "0 primary database files" in problem.message
    azure = azure_runs["cutover"]
    assert stack_check("primary-database-present", azure, azure_config()) == []
    without = [r for r in azure if r.name != "primary-db-g1"]
    [problem] = stack_check("primary-database-present", without, azure_config())
    assert "update would delete it" in problem.message
    unprotected = dataclasses.replace(named(azure, "primary-db-g1"), protect=False)
    [problem] = stack_check(
        "primary-database-present", replaced(azure, unprotected), azure_config()
    )
    assert problem.urn == unprotected.urn
    # A stack that holds nothing of a site yet (a new stack) passes.
    assert stack_check("primary-database-present", [], local_config()) == []


# -- backup retention (Azure) ------------------------------------------------------------------


def test_backup_retention(azure_runs: dict[str, list[Resource]]):
    retention = named(azure_runs["idle"], "primary-db-g1-retention")
    assert retention.props["retentionDays"] == 14
    assert check("backup-retention-7-days", retention, azure_config()) == []
    week = changed(retention, "retentionDays", 7)
    assert check("backup-retention-7-days", week, azure_config()) == []
    short = changed(retention, "retentionDays", 6)
    assert "keep 7 or more" in check("backup-retention-7-days", short, azure_config())[0]
    missing = changed(retention, "retentionDays", None)
    assert check("backup-retention-7-days", missing, azure_config())


def test_backup_retention_covers_primary(azure_runs: dict[str, list[Resource]]):
    resources = azure_runs["rollback-database"]
    config = azure_config("rollback-database")
    assert stack_check("backup-retention-covers-primary", resources, config) == []
    without = [r for r in resources if r.name != "primary-db-g2-retention"]
    [problem] = stack_check("backup-retention-covers-primary", without, config)
    assert problem.message.startswith("primary-db-g2:")
    short = changed(named(resources, "primary-db-g2-retention"), "retentionDays", 3)
    assert stack_check("backup-retention-covers-primary", replaced(resources, short), config)


# -- web apps (Azure) --------------------------------------------------------------------------


@pytest.fixture
def web_app(azure_runs: dict[str, list[Resource]]) -> Resource:
    return named(azure_runs["cutover"], "primary-app")


def test_web_app_https_only(web_app: Resource):
    assert check("web-app-https-only", web_app, azure_config()) == []
    assert check("web-app-https-only", changed(web_app, "httpsOnly", False), azure_config())
    assert check("web-app-https-only", changed(web_app, "httpsOnly", None), azure_config())


@pytest.mark.parametrize(
    ("path", "value", "fails"),
    [
        ("siteConfig.minTlsVersion", "1.3", False),
        ("siteConfig.minTlsVersion", "1.1", True),
        ("siteConfig.minTlsVersion", "1.0", True),
        ("siteConfig.minTlsVersion", None, True),
        ("siteConfig.scmMinTlsVersion", "1.0", True),
        ("siteConfig.scmMinTlsVersion", None, False),
    ],
)
def test_web_app_tls(web_app: Resource, path: str, value: str | None, fails: bool):
    assert check("web-app-tls-1-2", web_app, azure_config()) == []
    assert bool(check("web-app-tls-1-2", changed(web_app, path, value), azure_config())) is fails


@pytest.mark.parametrize("state", ["FtpsOnly", "AllAllowed", None])
def test_web_app_ftps_disabled(web_app: Resource, state: str | None):
    assert check("web-app-ftps-disabled", web_app, azure_config()) == []
    opened = changed(web_app, "siteConfig.ftpsState", state)
    assert check("web-app-ftps-disabled", opened, azure_config())


def test_web_app_ftp_publishing_credentials():
    allowed = Resource(FTP_ALLOWED, "ftp", {"allow": True})
    assert check("web-app-ftps-disabled", allowed, StackConfig())
    assert check("web-app-ftps-disabled", changed(allowed, "allow", False), StackConfig()) == []


# -- the SQL server (Azure) --------------------------------------------------------------------


def test_sql_firewall_from_the_program(azure_runs: dict[str, list[Resource]]):
    resources = azure_resources(AZURE_SCENARIOS["idle"], operatorIpAddresses="198.51.100.0/24")
    rules_ = [r for r in resources if r.type == FIREWALL_RULE]
    assert len(rules_) == 1  # the operator's range; the web apps use their subnet
    for rule in rules_:
        assert check("sql-server-not-open-to-all", rule, azure_config()) == []


def test_the_azure_services_rule_is_refused_unless_the_stack_opts_in():
    opted = azure_resources(AZURE_SCENARIOS["idle"], allowAzureServices="true")
    (everyone,) = [r for r in opted if r.name == "azure-sql-azure-services"]
    [problem] = check("sql-server-not-open-to-all", everyone, azure_config())
    assert "every Azure service of any customer" in problem
    assert (
        check("sql-server-not-open-to-all", everyone, azure_config(allowAzureServices="true")) == []
    )
    secret = dataclasses.replace(
        azure_config(allowAzureServices="true"), secret_keys=frozenset({"zdd:allowAzureServices"})
    )
    assert check("sql-server-not-open-to-all", everyone, secret)


@pytest.mark.parametrize(
    ("start", "end", "fails"),
    [
        ("0.0.0.0", "0.0.0.0", True),
        ("203.0.113.7", "203.0.113.7", False),
        ("10.0.0.0", "10.255.255.255", False),
        ("0.0.0.0", "255.255.255.255", True),
        ("1.0.0.0", "200.0.0.0", True),
        ("203.0.113.9", "203.0.113.1", True),
        ("everyone", "255.255.255.255", True),
    ],
)
def test_sql_firewall(start: str, end: str, fails: bool):
    rule = Resource(FIREWALL_RULE, "rule", {"startIpAddress": start, "endIpAddress": end})
    assert bool(check("sql-server-not-open-to-all", rule, StackConfig())) is fails


def test_sql_ipv6_firewall():
    everyone = {"startIpAddress": "::", "endIpAddress": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
    rule = Resource(IPV6_FIREWALL_RULE, "rule6", everyone)
    assert "every address" in check("sql-server-not-open-to-all", rule, StackConfig())[0]
    single = {"startIpAddress": "2001:db8::1", "endIpAddress": "2001:db8::1"}
    one = Resource(IPV6_FIREWALL_RULE, "rule6", single)
    assert check("sql-server-not-open-to-all", one, StackConfig()) == []


def test_sql_server_tls(azure_runs: dict[str, list[Resource]]):
    server = named(azure_runs["idle"], "azure-sql")
    assert check("sql-server-tls-1-2", server, azure_config()) == []
    assert check("sql-server-tls-1-2", changed(server, "minimalTlsVersion", "1.0"), azure_config())


# -- exactly one origin takes public traffic ---------------------------------------------------


def test_front_door_active_origin_local(local_runs: dict[str, list[Resource]]):
    for scenario, active in (("clone", "primary"), ("cutover", "clone"), ("idle", "primary")):
        door = named(local_runs[scenario], "front-door-proxy")
        assert door.props["active"] == active
        assert check("front-door-active-origin", door, local_config()) == []
    door = named(local_runs["idle"], "front-door-proxy")
    [problem] = check("front-door-active-origin", changed(door, "active", "clone"), local_config())
    assert "active origin 'clone' is not one of its origins (primary)" in problem
    assert check("front-door-active-origin", changed(door, "origins", {}), local_config())
    only_clone = changed(door, "origins", {"clone": "http://127.0.0.1:1"})
    assert check("front-door-active-origin", changed(only_clone, "active", "clone"), local_config())


def test_one_public_origin_local(local_runs: dict[str, list[Resource]]):
    resources = local_runs["cutover"]
    assert stack_check("one-public-origin", resources, local_config()) == []
    door = named(resources, "front-door-proxy")
    second = dataclasses.replace(door, name="front-door-2-proxy", urn=door.urn + "-2")
    [problem] = stack_check("one-public-origin", [*resources, second], local_config())
    assert "2 front doors" in problem.message
    assert stack_check("one-public-origin", [r for r in resources if r != door], local_config())


@pytest.mark.parametrize("scenario", ["clone", "cutover", "deploy", "return"])
def test_one_public_origin_azure(azure_runs: dict[str, list[Resource]], scenario: str):
    resources = azure_runs[scenario]
    config = azure_config(scenario)
    assert stack_check("one-public-origin", resources, config) == []
    # One single-origin group per site (and the front door's refusing origin); the public route
    # names the one with the traffic.
    groups = [r for r in resources if r.type == AFD_ORIGIN]
    assert {r.props["originGroupName"] for r in groups} == {"primary", "clone", "readonly"}
    primary = next(r for r in groups if r.props["originGroupName"] == "primary")
    second = dataclasses.replace(primary, name="front-door-second", urn="second")
    [problem] = stack_check("one-public-origin", [*resources, second], config)
    assert "origin group primary: 2 origins take traffic" in problem.message
    none = [changed(primary, "enabledState", "Disabled")]
    [problem] = stack_check(
        "one-public-origin", [*(r for r in resources if r is not primary), *none], config
    )
    assert "0 origins take traffic (none)" in problem.message


# -- clone-database-is-copy --------------------------------------------------------------------


def test_clone_database_is_copy_local(local_runs: dict[str, list[Resource]]):
    clone_db = named(local_runs["clone"], "clone-db-file")
    assert clone_db.props["source"] == f"{STATE_DIR}/primary-g1.sqlite"
    assert check("clone-database-is-copy", clone_db, local_config()) == []
    assert check("clone-database-is-copy", changed(clone_db, "source", None), local_config())
    other = changed(clone_db, "source", "/tmp/other.sqlite")
    assert "not the primary database" in check("clone-database-is-copy", other, local_config())[0]
    old = changed(clone_db, "source", f"{STATE_DIR}/primary-g1.sqlite")
    assert check("clone-database-is-copy", old, local_config(databaseGeneration="2"))
    over = changed(clone_db, "path", f"{STATE_DIR}/primary-g1.sqlite")
    assert "overwrite the primary" in check("clone-database-is-copy", over, local_config())[0]
    restored = named(local_runs["rollback-database"], "clone-db-file")
    assert check("clone-database-is-copy", restored, local_config("rollback-database")) == []


def test_clone_database_is_copy_local_postgresql():
    # A read-only clone's database on PostgreSQL: a copy of the stack's cluster.
    clone = Resource(
        DYNAMIC,
        "clone-db-cluster",
        {"source": "primary_g1", "data_dir": f"{STATE_DIR}/postgresql-clone/data"},
    )
    assert check("clone-database-is-copy", clone, local_config()) == []
    old = check("clone-database-is-copy", clone, local_config(databaseGeneration="2"))
    assert "not the current primary database" in old[0]
    # Its folder is emptied before the copy: never the stack's own cluster, never elsewhere.
    for data in (f"{STATE_DIR}/postgresql/data", "/tmp/postgresql-clone/data"):
        over = check("clone-database-is-copy", changed(clone, "data_dir", data), local_config())
        assert "not the clone's cluster folder" in over[0], data


def test_a_writable_clone_cluster_needs_the_acknowledgement_local_postgresql():
    # A read-write clone's cluster on PostgreSQL takes writes that are lost when it goes.
    read_only = Resource(
        DYNAMIC,
        "clone-db-cluster",
        {"source": "primary_g1", "data_dir": f"{STATE_DIR}/postgresql-clone/data"},
    )
    assert check("clone-read-only", read_only, local_config()) == []
    writable = changed(read_only, "writable", True)
    [problem] = check("clone-read-only", writable, local_config())
    assert "its cluster is ReadWrite" in problem and "does not acknowledge data loss" in problem
    assert check("clone-read-only", writable, local_config("read-write-clone")) == []


def test_clone_database_is_copy_azure(azure_runs: dict[str, list[Resource]]):
    copy_ = named(azure_runs["cutover"], "clone-db-copy")
    assert copy_.props["createMode"] == "Copy"
    assert check("clone-database-is-copy", copy_, azure_config()) == []
    fresh = changed(copy_, "createMode", "Default")
    assert "is a Copy" in check("clone-database-is-copy", fresh, azure_config())[0]
    source = copy_.props["sourceDatabaseId"]
    foreign = changed(copy_, "sourceDatabaseId", source.replace("zdd-test-a1b2c3-sql", "other-sql"))
    assert "another server" in check("clone-database-is-copy", foreign, azure_config())[0]
    unrelated = changed(copy_, "sourceDatabaseId", source.replace("site-g1", "scratch"))
    assert (
        "not a generation of the primary"
        in check("clone-database-is-copy", unrelated, azure_config())[0]
    )
    assert check("clone-database-is-copy", changed(copy_, "sourceDatabaseId", None), azure_config())


# -- the pack's adapter (policies/__main__.py) -------------------------------------------------


def test_the_pack_builds_every_policy_at_mandatory_level():
    import policies.__main__ as pack

    built = pack.policies()
    assert [p.name for p in built] == [spec.name for spec in POLICIES]
    for policy, spec in zip(built, POLICIES, strict=True):
        expected = ResourceValidationPolicy if spec.check else StackValidationPolicy
        assert isinstance(policy, expected)
        assert policy.enforcement_level is not None
        assert policy.enforcement_level.value == "mandatory"


def test_the_pack_keeps_the_stack_config_the_engine_passes(monkeypatch: pytest.MonkeyPatch):
    from pulumi.runtime.proto import analyzer_pb2
    from pulumi_policy import policy as policy_sdk

    import policies.__main__ as pack

    servicer_class = policy_sdk._PolicyAnalyzerServicer
    monkeypatch.setattr(servicer_class, "ConfigureStack", servicer_class.ConfigureStack)
    monkeypatch.setattr(pack, "_stack_config", {})
    monkeypatch.setattr(pack, "_secret_keys", set())
    monkeypatch.setattr(pack, "_received", False)
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    assert not pack.stack_config().known
    pack._keep_stack_config()
    built: list[policy_sdk.Policy] = list(pack.policies())
    servicer = servicer_class(
        "smooth-deploy", "0.1.0", built, policy_sdk.EnforcementLevel.MANDATORY
    )
    request = analyzer_pb2.AnalyzerStackConfigureRequest(
        stack="site",
        config={
            "zdd:mode": "read-write",
            "zdd:acceptDataLoss": "true",
            "zdd:sqlAdminPassword": "s3cret",
            "aws:region": "x",
        },
        config_secret_keys=["zdd:sqlAdminPassword"],
    )
    servicer.ConfigureStack(request, None)
    config = pack.stack_config()
    assert config.known and config.data_loss_acknowledged
    assert "zdd:sqlAdminPassword" not in config.values  # secrets are never kept
    assert config.is_secret("sqlAdminPassword")
    assert "aws:region" not in config.values


def test_the_pack_runs_checks_through_pulumi_policy_args(local_runs: dict[str, list[Resource]]):
    """The adapter hands the SDK's arguments to the checks and reports what they find."""
    from pulumi_policy import PolicyResourceOptions, ResourceValidationArgs
    from pulumi_policy.policy import PolicyCustomTimeouts

    import policies.__main__ as pack

    clone = named(local_runs["cutover"], "clone-process")
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    args = ResourceValidationArgs(
        DYNAMIC, {**clone.props, "database_mode": "ReadWrite"}, clone.urn, clone.name,
        options, None,
    )  # fmt: skip
    reported: list[tuple[str, str | None]] = []

    def report(message: str, urn: str | None = None) -> None:
        reported.append((message, urn))

    policy = next(p for p in pack.policies() if p.name == "clone-read-only")
    assert isinstance(policy, ResourceValidationPolicy)
    policy.validate(args, report)
    assert len(reported) == 1 and "ReadWrite" in reported[0][0]
