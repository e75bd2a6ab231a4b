"""The Azure target under Pulumi's mocks: a mock monitor that records every resource
registration (type, logical name, inputs with which of them are secrets, and options: protect,
retainOnDelete, ignoreChanges, dependencies, create timeout) and `run_program`, which runs the
real program assembly (`infra.program.build(declare(settings), azure_target(config))`) on it.
No engine, no Azure."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi_command import local

from infra.azure.postgres_copy import CLONE_ROLE
from infra.azure.target import azure_target
from infra.program import build
from zdd.phases import RESTORE_POINT_SUFFIX, PhaseSettings, declare

SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-000000000000"
FRONT_DOOR_ID = "5b3c9e1a-7f7e-4c7a-9d55-0123456789ab"
PASSWORD = "Gener4ted-Passw0rd!"
MIGRATION_PASSWORD = "Migr4tion-Passw0rd!"
REGISTRY_ID = (
    f"{SUBSCRIPTION}/resourceGroups/rg-shared/providers/Microsoft.ContainerRegistry/registries/acme"
)
REGISTRY_HOST = "acme.azurecr.io"
# The site, as its app spec describes it (the same shape as a local stack's).
APP: dict[str, Any] = {
    "releases": f"{REGISTRY_HOST}/site:{{version}}",
    "migrate": ["python", "-m", "site_migrations", "upgrade"],
    "digest": ["python", "-m", "site_migrations", "digest"],
    "health": {"path": "/healthz"},
}


def app_spec(**changes: Any) -> str:
    """A `zdd:app` value: APP with `changes` (None removes a field), not validated here."""
    return json.dumps({k: v for k, v in {**APP, **changes}.items() if v is not None})


BASE_CONFIG = {
    "zdd:target": "azure",
    "zdd:azureLocation": "westeurope",
    "zdd:resourceGroupName": "rg-zdd-test",
    "zdd:namePrefix": "zdd-test-a1b2c3",
    "zdd:app": app_spec(),
    "zdd:containerRegistryId": REGISTRY_ID,
    "zdd:operatorIpAddresses": "203.0.113.7",
    "zdd:sqlAdminLogin": "zddadmin",
    "zdd:sqlAdminPassword": PASSWORD,
    "zdd:migrationLogin": "migrator",
    "zdd:migrationPassword": MIGRATION_PASSWORD,
    "zdd:backupRetentionDays": "14",
}
SECRET_KEYS = ["zdd:sqlAdminPassword", "zdd:migrationPassword"]

DATABASE = "azure-native:sql:Database"
RETENTION = "azure-native:sql:BackupShortTermRetentionPolicy"
WEB_APP = "azure-native:web:WebApp"
PLAN = "azure-native:web:AppServicePlan"
ORIGIN = "azure-native:cdn:AFDOrigin"
ROUTE = "azure-native:cdn:Route"
WAF = "azure-native:frontdoor:Policy"
COMMAND = "command:local:Command"
# The restore point's proof (infra/azure/restore_point.py), a dynamic resource.
DYNAMIC = "pulumi-python:dynamic:Resource"
DIGEST = "c0ffee-content-digest"
TAKEN_AT = 1740824105.5
# What the clone's database access (infra/azure/clone_access.py) gives the clone to connect with.
CLONE_PASSWORD = "Cl0ne-0wn-Passw0rd!"


# -- the recording mock monitor ------------------------------------------------------------


SERVER = "azure-native:dbforpostgresql:Server"
PG_DATABASE = "azure-native:dbforpostgresql:Database"
PG_FIREWALL = "azure-native:dbforpostgresql:FirewallRule"
ENDPOINT = "azure-native:network:PrivateEndpoint"
HOST_G1 = "zdd-test-a1b2c3-pg-g1.postgres.database.azure.com"
HOST_G2 = "zdd-test-a1b2c3-pg-g2.postgres.database.azure.com"
POSTGRES_APP = app_spec(database={"engine": "postgresql"})


def _postgres_state(typ: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """What Azure answers for the PostgreSQL resources (None for any other)."""
    group = f"{SUBSCRIPTION}/resourceGroups/{inputs.get('resourceGroupName', 'rg')}"
    state = dict(inputs)
    if typ == SERVER:
        server = inputs["serverName"]
        state.update(name=server, fullyQualifiedDomainName=f"{server}.postgres.database.azure.com")
        return f"{group}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{server}", state
    if typ == PG_DATABASE:
        state["name"] = inputs["databaseName"]
        return f"{group}/flexibleServers/{inputs['serverName']}/databases/{state['name']}", state
    if typ == ENDPOINT:
        state["name"] = inputs["privateEndpointName"]
        return f"{group}/providers/Microsoft.Network/privateEndpoints/{state['name']}", state
    if typ == DYNAMIC and "destination" in inputs:
        read_only = inputs["read_only"]
        state.update(
            user=CLONE_ROLE,
            password=CLONE_PASSWORD,
            write_privileges=0 if read_only else 4,
            database_settings=f"default_transaction_read_only={'on' if read_only else 'off'}",
        )
        return f"{inputs['host']}/{inputs['destination']}/{CLONE_ROLE}", state
    return None


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    """Plain values, with the path of every secret recorded (the SDK lifts secrecy upwards)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            secrets.add(path)
            return _unwrap(value["value"], path, secrets)
        return {k: _unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


def _mock_state(typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The id and outputs Azure would give back, computed from the inputs."""
    postgres = _postgres_state(typ, inputs)
    if postgres is not None:
        return postgres
    group = f"{SUBSCRIPTION}/resourceGroups/{inputs.get('resourceGroupName', 'rg')}"
    state = dict(inputs)
    if typ == "azure-native:resources:ResourceGroup":
        state["name"] = inputs["resourceGroupName"]
        return group, state
    if typ == "azure-native:managedidentity:UserAssignedIdentity":
        state["clientId"] = f"client-of-{inputs['resourceName']}"
        state["principalId"] = f"principal-of-{inputs['resourceName']}"
        return f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}", state
    if typ == PLAN:
        return f"{group}/providers/Microsoft.Web/serverfarms/{inputs['name']}", state
    if typ == WEB_APP:
        state["defaultHostName"] = f"{inputs['name']}.azurewebsites.net"
        identity = inputs.get("identity")
        if identity:  # Azure answers with a map from identity id to its principal
            state["identity"] = {
                **identity,
                "userAssignedIdentities": {i: {} for i in identity["userAssignedIdentities"]},
            }
        return f"{group}/providers/Microsoft.Web/sites/{inputs['name']}", state
    if typ == "azure-native:sql:Server":
        state["name"] = inputs["serverName"]
        state["fullyQualifiedDomainName"] = f"{inputs['serverName']}.database.windows.net"
        return f"{group}/providers/Microsoft.Sql/servers/{inputs['serverName']}", state
    server = f"{group}/providers/Microsoft.Sql/servers/{inputs.get('serverName')}"
    if typ == DATABASE:
        state["name"] = inputs["databaseName"]
        return f"{server}/databases/{inputs['databaseName']}", state
    if typ == RETENTION:
        return (
            f"{server}/databases/{inputs['databaseName']}/backupShortTermRetentionPolicies/x",
            state,
        )
    if typ == "azure-native:cdn:Profile":
        state["name"] = inputs["profileName"]
        state["frontDoorId"] = FRONT_DOOR_ID
        return f"{group}/providers/Microsoft.Cdn/profiles/{inputs['profileName']}", state
    profile = f"{group}/providers/Microsoft.Cdn/profiles/{inputs.get('profileName')}"
    if typ == "azure-native:cdn:AFDEndpoint":
        state["name"] = inputs["endpointName"]
        state["hostName"] = f"{inputs['endpointName']}-h7c2d5e.z01.azurefd.net"
        return f"{profile}/afdEndpoints/{inputs['endpointName']}", state
    if typ == "azure-native:cdn:AFDOriginGroup":
        state["name"] = inputs["originGroupName"]
        return f"{profile}/originGroups/{inputs['originGroupName']}", state
    if typ == ORIGIN:
        state["name"] = inputs["originName"]
        return (
            f"{profile}/originGroups/{inputs['originGroupName']}/origins/{inputs['originName']}",
            state,
        )
    if typ == DYNAMIC and name.endswith("-access"):
        # What the provider's create adds: the user it made, and what the database said then.
        read_only = inputs["read_only"]
        state.update(
            user="zdd_clone",
            password=CLONE_PASSWORD,
            updateability="READ_ONLY" if read_only else "READ_WRITE",
            writing_roles=[] if read_only else ["db_datawriter"],
        )
        return f"{inputs['server']}/{inputs['database']}/zdd_clone", state
    if typ == DYNAMIC and name.endswith(RESTORE_POINT_SUFFIX):
        # What the provider's create adds: when it read the digest, and what it read.
        state.update(taken_at=TAKEN_AT, digest=DIGEST)
        return inputs["restore_point"], state
    if typ == ROUTE:
        state["name"] = inputs["routeName"]
        return (
            f"{profile}/afdEndpoints/{inputs['endpointName']}/routes/{inputs['routeName']}",
            state,
        )
    return f"{name}-id", state


class AzureMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return _mock_state(args.typ, args.name, _unwrap(args.inputs, "", set()))

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    id: str
    inputs: dict[str, Any]
    secrets: set[str]
    protect: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    dependencies: list[str]
    create_timeout: str = ""

    def setting(self, key: str) -> str:
        """One app setting of a web app."""
        pairs = {p["name"]: p["value"] for p in self.inputs["siteConfig"]["appSettings"]}
        return str(pairs[key])


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        secrets: set[str] = set()
        inputs = _unwrap(rpc.deserialize_properties(request.object), "", secrets)
        self.registrations.append(
            Registration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                id=response.id,
                inputs=inputs,
                secrets=secrets,
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=list(request.ignoreChanges),
                dependencies=list(request.dependencies),
                create_timeout=request.customTimeouts.create,
            )
        )
        return response


@dataclass
class Run:
    registrations: list[Registration]
    outputs: dict[str, Any] = field(default_factory=dict)

    def named(self, name: str) -> Registration:
        found = [r for r in self.registrations if r.name == name]
        assert len(found) == 1, f"{name}: {len(found)} registrations"
        return found[0]

    def has(self, name: str) -> bool:
        return any(r.name == name for r in self.registrations)

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == typ]

    def types(self) -> Counter[str]:
        return Counter(
            r.type
            for r in self.registrations
            if r.type.startswith(("azure-native:", "command:", "pulumi-python:dynamic:"))
        )


def run_program(
    settings: PhaseSettings,
    *,
    guard: bool = False,
    config: Mapping[str, str] | None = None,
    **keys: str,
) -> Run:
    """Declare `settings` on the Azure target under fresh mocks; return what was registered.
    `config` and `keys` override `zdd:*` keys ("<unset>" removes one). With `guard`, every
    component depends on a stand-in for the program's phase guard."""
    config = {**(config or {}), **keys}
    mocks = AzureMocks()
    monitor = RecordingMonitor(mocks)
    runtime_settings.ROOT.set(None)  # a new root stack for every run: no state is shared
    pulumi.runtime.set_mocks(
        mocks, project="smooth-deploy", stack="test", preview=False, monitor=monitor
    )
    values = {**BASE_CONFIG, **{f"zdd:{key}": value for key, value in config.items()}}
    values = {key: value for key, value in values.items() if value != "<unset>"}
    pulumi.runtime.set_all_config(values, secret_keys=SECRET_KEYS)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any]:
        opts = None
        if guard:
            stand_in = local.Command("phase-guard", create="true")
            opts = pulumi.ResourceOptions(depends_on=[stand_in])
        built = build(declare(settings), azure_target(pulumi.Config("zdd")), opts)
        exported = {
            "public_url": built.front_door.public_url,
            "preview_url": built.front_door.preview_url,
            "primary_url": built.primary.url,
            "clone_url": built.clone.url if built.clone else None,
            "primary_database": built.primary_database.database_name,
            "clone_database": built.clone_database.database_name if built.clone_database else None,
            "connection": built.primary_database.connection,
            "restore_point": built.primary_database.restore_point_taken,
            "front_door": built.front_door.driver_outputs,
            "connection_is_secret": pulumi.Output.from_input(
                cast(Any, built.primary_database.connection.is_secret())
            ),
        }
        return pulumi.Output.all(**exported).apply(outputs.update)

    program()
    return Run(list(monitor.registrations), outputs)
