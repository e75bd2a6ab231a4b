"""The policy pack with the real engine: our CLI, our language host's `RunPlugin`, the pack.

- On a real local stack: the pack passes a healthy stack (idle, then the clone phase, with the
  real resources), and a config the program accepts but a policy refuses stops
  `pulumi up --policy-pack policies` before anything changes, naming the policy.
- On a throwaway project that declares resources of the local target's types and names, with
  inputs taken from its config: each kind of violation, through the Automation API calls the
  driver makes (`preview`/`up` with `policy_packs`).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from tests.helpers.commands import ROOT, Result

pytestmark = pytest.mark.engine

PACK = str(ROOT / "policies")

PROBE_PROGRAM = textwrap.dedent(
    '''
    """Stand-ins for the local target's resources: same types and names, no side effects."""
    import pulumi
    from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult


    class Inert(ResourceProvider):
        def create(self, props):
            return CreateResult(id_=props["key"], outs=dict(props))

        def diff(self, _id, olds, news):
            return DiffResult(changes=any(olds.get(k) != v for k, v in news.items()))

        def update(self, _id, _olds, news):
            return UpdateResult(outs=dict(news))


    class Stand(Resource):
        pass


    config = pulumi.Config("zdd")
    state = config.require("stateDir")
    inert = Inert()
    primary = f"{state}/primary-g1.sqlite"
    if not config.get_bool("dropPrimary"):
        Stand(inert, "primary-db-file", {"key": "p", "path": primary, "source": None})
    clone = f"{state}/clone-g1.sqlite"
    Stand(inert, "clone-db-file", {"key": "c", "path": clone, "source": primary})
    modes = {"primary": "ReadWrite", "clone": config.get("cloneDatabaseMode") or "ReadOnly"}
    for instance, mode in modes.items():
        props = {"key": instance, "instance": instance, "version": "v1", "database_mode": mode}
        Stand(inert, f"{instance}-process", props)
    origins = {"primary": "http://127.0.0.1:1", "clone": "http://127.0.0.1:2"}
    props = {"key": "fd", "origins": origins, "active": config.get("active") or "primary"}
    Stand(inert, "front-door-proxy", props)
    '''
)


def _resources(export: str) -> Any:
    return json.loads(export)["deployment"]["resources"]


def _real(resources: list[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """What the resources are, leaving out bookkeeping the engine rewrites on any update: the
    default provider's record of the stack config, and each dynamic resource's serialized
    provider (`__provider`, pickled anew by every run of the program)."""

    def props(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k != "__provider"}

    return sorted(
        (
            (r["urn"], r.get("id", ""), props(r.get("inputs", {})), props(r.get("outputs", {})))
            for r in resources
            if not r["type"].startswith("pulumi:providers:")
        ),
        key=lambda entry: entry[0],
    )


def test_pack_passes_a_healthy_local_stack_and_refuses_a_violating_config(
    local_stack: Callable[[str], dict[str, Any]], pulumi: Callable[..., Result]
):
    name = local_stack("v1")["stack"]
    preview = pulumi("preview", "--stack", name, "--policy-pack", "policies")
    assert preview.code == 0, preview.stdout + preview.stderr
    assert "smooth-deploy@v0.1.0" in preview.stdout
    assert "mandatory" not in preview.stdout

    # The clone phase, applied with the pack: the real clone, its copy and the front door pass.
    for key, value in (("targetVersion", "v2"), ("phase", "clone")):
        assert pulumi("config", "set", "--stack", name, f"zdd:{key}", value).code == 0
    up = pulumi("up", "--yes", "--stack", name, "--policy-pack", "policies")
    assert up.code == 0, up.stdout + up.stderr
    assert "mandatory" not in up.stdout

    # ReadWrite with an acknowledgement kept secret: the program accepts it, the pack does not
    # (an acknowledgement must be readable in the stack's config).
    before = pulumi("stack", "export", "--stack", name)
    assert pulumi("config", "set", "--stack", name, "zdd:mode", "read-write").code == 0
    secret = ("config", "set", "--secret", "--stack", name, "zdd:acceptDataLoss", "true")
    assert pulumi(*secret).code == 0
    refused = pulumi("up", "--yes", "--stack", name, "--policy-pack", "policies")
    assert refused.code != 0
    assert "[mandatory]  clone-read-only" in refused.stdout
    assert "zdd:acceptDataLoss is a secret" in refused.stdout
    after = pulumi("stack", "export", "--stack", name)
    assert _resources(after.stdout) == _resources(before.stdout)
    # Back to a config the driver can clean up from.
    assert pulumi("config", "set", "--stack", name, "zdd:mode", "read-only").code == 0
    assert pulumi("config", "rm", "--stack", name, "zdd:acceptDataLoss").code == 0


def _exported(stack: auto.Stack) -> list[dict[str, Any]]:
    deployment = stack.export_stack().deployment
    assert deployment is not None
    resources: list[dict[str, Any]] = deployment["resources"]
    return resources


def _policy_names(events: list[auto.EngineEvent]) -> set[str]:
    return {
        event.policy_event.policy_name
        for event in events
        if event.policy_event is not None and event.policy_event.enforcement_level == "mandatory"
    }


def test_violations_stop_the_update_through_the_automation_api(
    tmp_path: Path, engine_env: dict[str, str]
):
    project = tmp_path / "probe"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: zdd-policy-probe\nruntime: python\n")
    (project / "__main__.py").write_text(PROBE_PROGRAM)
    command = auto.PulumiCommand(root=str(Path(sys.executable).parent.parent))
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(project), env_vars=engine_env, pulumi_command=command
    )
    stack = auto.create_stack("probe", work_dir=str(project), opts=opts)
    try:
        stack.set_config("zdd:stateDir", auto.ConfigValue(str(tmp_path / "state")))
        assert stack.up(policy_packs=[PACK]).summary.result == "succeeded"

        # A ReadWrite clone without acknowledgement: the preview names the policy, and an
        # update (the Automation API skips the preview) stops before the clone is changed.
        stack.set_config("zdd:cloneDatabaseMode", auto.ConfigValue("ReadWrite"))
        before = _real(_exported(stack))
        events: list[auto.EngineEvent] = []
        with pytest.raises(auto.CommandError) as failed:
            stack.preview(policy_packs=[PACK], on_event=events.append)
        assert "clone-read-only" in str(failed.value)
        assert _policy_names(events) == {"clone-read-only"}
        events.clear()
        with pytest.raises(auto.CommandError):
            stack.up(policy_packs=[PACK], on_event=events.append)
        assert _policy_names(events) == {"clone-read-only"}
        assert _real(_exported(stack)) == before

        # The stack's acknowledgement reaches the pack through the engine.
        stack.set_all_config(
            {
                "zdd:mode": auto.ConfigValue("read-write"),
                "zdd:acceptDataLoss": auto.ConfigValue("true"),
            }
        )
        assert stack.up(policy_packs=[PACK]).summary.result == "succeeded"

        # Traffic to an origin the front door does not have, and a primary database the
        # program stops declaring (the update would delete it): both refused in the preview.
        stack.set_all_config(
            {"zdd:active": auto.ConfigValue("nowhere"), "zdd:dropPrimary": auto.ConfigValue("true")}
        )
        events.clear()
        with pytest.raises(auto.CommandError):
            stack.preview(policy_packs=[PACK], on_event=events.append)
        assert _policy_names(events) == {"front-door-active-origin", "primary-database-present"}
    finally:
        stack.destroy()
        stack.workspace.remove_stack("probe")
