"""A thin wrapper around one Automation API stack: config, updates, outputs."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from zdd.environment import Environment
from zdd.errors import BadInput, EngineFailed, PolicyViolation

NAMESPACE = "zdd"
# Config keys stored encrypted (an Azure stack's generated SQL administrator password).
SECRET_KEYS = frozenset({"sqlAdminPassword"})
_STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_stack_name(name: str) -> None:
    if not _STACK_NAME.match(name):
        raise BadInput(
            f"stack name {name!r} is not valid: use letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )


@dataclass
class Outcome:
    changes: dict[str, int]
    seconds: float
    # (resource name, operation) of every resource the engine changed or would change.
    changed: list[tuple[str, str]]
    front_door_changed_at: float | None = None


class _ChangeLog:
    """Collects the engine's step events: which resource, which operation."""

    _QUIET = frozenset({"same", "read", "refresh"})

    def __init__(self) -> None:
        self.changed: list[tuple[str, str]] = []
        # When the engine finished changing a front door resource (epoch seconds): the
        # moment public traffic moved, whatever the target.
        self.front_door_changed_at: float | None = None
        # "policy: message" of every mandatory policy that refused something.
        self.violations: list[str] = []

    @staticmethod
    def _op(metadata: Any) -> str:
        return str(metadata.op.value if hasattr(metadata.op, "value") else metadata.op)

    def __call__(self, event: auto.EngineEvent) -> None:
        policy = event.policy_event
        if policy is not None and policy.enforcement_level == "mandatory":
            where = (policy.resource_urn or "").rsplit("::", 1)[-1] or "the stack"
            first_line = policy.message.strip().splitlines()[0] if policy.message.strip() else ""
            self.violations.append(f"{policy.policy_name} ({where}): {first_line}")
        pre, done = event.resource_pre_event, event.res_outputs_event
        if pre is not None:
            op = self._op(pre.metadata)
            if op not in self._QUIET and pre.metadata.type != "pulumi:pulumi:Stack":
                self.changed.append((pre.metadata.urn.rsplit("::", 1)[-1], op))
        elif (
            done is not None
            and "FrontDoor$" in done.metadata.urn
            and self._op(done.metadata) not in self._QUIET
        ):
            self.front_door_changed_at = time.time()


def _raise_for_policies(stack: str, log: _ChangeLog) -> None:
    if log.violations:
        raise PolicyViolation(
            f"the policy pack refused the change to stack {stack!r}; nothing was changed:\n"
            + "\n".join(f"  {v}" for v in log.violations)
        )


def _error_text(exc: Exception) -> str:
    """The part of an engine error an operator needs: the diagnostics, not the command line."""
    text = str(exc)
    stdout, _, stderr = text.partition("\n stderr: ")
    stdout = stdout.partition(" stdout: ")[2] or stdout
    diagnostics = ""
    if "Diagnostics:" in stdout:
        diagnostics = re.split(r"\n(?:Outputs|Resources):", stdout.split("Diagnostics:", 1)[1])[0]
    lines = [line for line in f"{diagnostics}\n{stderr}".splitlines() if line.strip()]
    return "\n".join(lines[-40:]) or text.strip()


# The plugins the engine starts run in process groups of their own, so they outlive a CLI that
# was killed; one that goes on with an operation would race the update that resumes it.
_PLUGIN_MODULES = ("-m pulumi.dynamic", "-m zdd.langhost")


def _under_a_pulumi_cli(pid: int) -> bool:
    """Whether a `pulumi` process is among the first few ancestors of `pid` (a plugin may be
    started through a shell script, so its CLI is its grandparent)."""
    for _ in range(4):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            pid = int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
            )
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except (OSError, StopIteration, ValueError):
            return False
        if Path(argv0.decode(errors="replace")).name == "pulumi":
            return True
        if pid <= 1:
            return False
    return False


def _stop_orphaned_plugins(say: Callable[[str], None]) -> None:
    """Stop this project's engine plugins whose update is gone (no CLI above them any more)."""
    from infra.local.processes import find_matching, stop

    interpreter = str(Path(sys.prefix) / "bin")
    for pid in find_matching(interpreter):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmdline for m in _PLUGIN_MODULES) and not _under_a_pulumi_cli(pid):
            say(f"stopping plugin process {pid} of the update that died")
            stop(pid, interpreter, timeout=2)


def _lock_holder(lock: Path) -> bool:
    """Whether the process that wrote a file-backend lock still runs (here, or elsewhere)."""
    try:
        content = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    if content.get("hostname") != socket.gethostname():
        return True  # another machine's update: never ours to clear
    try:
        os.kill(int(content.get("pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class Stack:
    """One stack of the project on the configured backend."""

    def __init__(self, env: Environment, name: str, stack: auto.Stack) -> None:
        self.env = env
        self.name = name
        self._stack = stack
        # Each CLI call costs the better part of a second; what this wrapper wrote or the last
        # update returned is known without asking again.
        self._config: dict[str, str] | None = None
        self._outputs: dict[str, Any] | None = None

    @classmethod
    def _options(cls, env: Environment) -> auto.LocalWorkspaceOptions:
        return auto.LocalWorkspaceOptions(work_dir=str(env.root), env_vars=env.engine_env())

    @classmethod
    def exists(cls, env: Environment, name: str) -> bool:
        workspace = auto.LocalWorkspace(**vars(cls._options(env)))
        return any(s.name == name for s in workspace.list_stacks())

    @classmethod
    def create(cls, env: Environment, name: str) -> Stack:
        check_stack_name(name)
        try:
            stack = auto.create_stack(name, work_dir=str(env.root), opts=cls._options(env))
        except auto.StackAlreadyExistsError:
            raise BadInput(f"stack {name!r} already exists; use it, or destroy it first") from None
        return cls(env, name, stack)

    @classmethod
    def select(cls, env: Environment, name: str) -> Stack:
        check_stack_name(name)
        try:
            stack = auto.select_stack(name, work_dir=str(env.root), opts=cls._options(env))
        except auto.StackNotFoundError:
            raise BadInput(f"no stack named {name!r}; create it with `zdd init`") from None
        return cls(env, name, stack)

    # -- config --------------------------------------------------------------------------

    def config(self) -> dict[str, str]:
        """The `zdd:*` config, keys without the namespace."""
        if self._config is None:
            prefix = f"{NAMESPACE}:"
            try:
                everything = self._stack.get_all_config()
            except auto.CommandError as exc:
                raise BadInput(
                    f"cannot read the config of stack {self.name!r} "
                    f"(stacks/Pulumi.{self.name}.yaml): {_error_text(exc).splitlines()[-1]}"
                ) from None
            self._config = {
                key.removeprefix(prefix): item.value
                for key, item in everything.items()
                if key.startswith(prefix)
            }
        return dict(self._config)

    def set_config(self, values: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) `zdd:*` keys in one step."""
        to_set = {
            f"{NAMESPACE}:{key}": auto.ConfigValue(value, secret=key in SECRET_KEYS)
            for key, value in values.items()
            if value is not None
        }
        to_remove = [f"{NAMESPACE}:{key}" for key, value in values.items() if value is None]
        if to_set:
            self._stack.set_all_config(to_set)
        if to_remove:
            self._stack.remove_all_config(to_remove)
        if self._config is not None:
            self._config.update({k: v for k, v in values.items() if v is not None})
            for key in (k for k, v in values.items() if v is None):
                self._config.pop(key, None)

    # -- engine --------------------------------------------------------------------------

    def up(
        self,
        on_output: Callable[[str], None] | None = None,
        policy_packs: list[str] | None = None,
        **kwargs: Any,
    ) -> Outcome:
        self._outputs = None
        log = _ChangeLog()
        try:
            result = self._stack.up(
                on_output=on_output,
                on_event=log,
                color="never",
                policy_packs=policy_packs,
                **kwargs,
            )
        except auto.ConcurrentUpdateError as exc:
            raise EngineFailed(
                f"another update holds stack {self.name!r}: {_error_text(exc)}"
            ) from None
        except auto.CommandError as exc:
            _raise_for_policies(self.name, log)
            raise EngineFailed(
                f"pulumi up failed on stack {self.name!r}:\n{_error_text(exc)}"
            ) from None
        self._outputs = {key: item.value for key, item in result.outputs.items()}
        summary = result.summary
        seconds = (
            (summary.end_time - summary.start_time).total_seconds()
            if summary.end_time and summary.start_time
            else 0.0
        )
        changes = {str(op): count for op, count in (summary.resource_changes or {}).items()}
        return Outcome(changes, seconds, log.changed, log.front_door_changed_at)

    def preview(
        self, config_file: str | None = None, policy_packs: list[str] | None = None
    ) -> tuple[auto.PreviewResult, list[tuple[str, str]]]:
        log = _ChangeLog()
        try:
            result = self._stack.preview(
                color="never",
                diff=True,
                config_file=config_file,
                on_event=log,
                policy_packs=policy_packs,
            )
            return result, log.changed
        except auto.CommandError as exc:
            _raise_for_policies(self.name, log)
            raise EngineFailed(
                f"pulumi preview failed on stack {self.name!r}:\n{_error_text(exc)}"
            ) from None

    def outputs(self) -> dict[str, Any]:
        if self._outputs is None:
            self._outputs = {key: item.value for key, item in self._stack.outputs().items()}
        return dict(self._outputs)

    def destroy(self, on_output: Callable[[str], None] | None = None) -> None:
        self._outputs = None
        try:
            self._stack.destroy(on_output=on_output, color="never")
        except auto.CommandError as exc:
            raise EngineFailed(
                f"pulumi destroy failed on stack {self.name!r}:\n{_error_text(exc)}"
            ) from None

    def history(self) -> list[auto.UpdateSummary]:
        return self._stack.history(show_secrets=False)

    def _lock_files(self) -> list[Path]:
        backend = os.environ.get("PULUMI_BACKEND_URL", "")
        if not backend.startswith("file://"):
            return []  # other backends release the locks of dead clients themselves
        locks = Path(backend.removeprefix("file://")) / ".pulumi" / "locks"
        return [p for p in locks.glob(f"*/*/{self.name}/*.json")]

    def wait_for_running_update(self, say: Callable[[str], None], timeout: float = 600) -> None:
        """Wait for an update that a dead driver's CLI still runs; clear a dead CLI's lock."""
        deadline = time.monotonic() + timeout
        while locks := self._lock_files():
            holders = [_lock_holder(lock) for lock in locks]
            if not any(alive for alive in holders):
                say("clearing the lock of an update whose process is gone")
                _stop_orphaned_plugins(say)
                self._stack.cancel()
                return
            if time.monotonic() > deadline:
                raise EngineFailed(
                    f"an update of stack {self.name!r} still runs after {timeout:.0f}s"
                )
            say("waiting for an update that is still running on this stack")
            time.sleep(1)

    def drop_pending_operations(self, say: Callable[[str], None]) -> None:
        """An update that was killed leaves pending operations that block the next one."""
        exported = self._stack.export_stack()
        state = dict(exported.deployment or {})
        if state.get("pending_operations"):
            count = len(state["pending_operations"])
            say(f"dropping {count} pending operation(s) of an interrupted update")
            state["pending_operations"] = []
            self._stack.import_stack(auto.Deployment(version=exported.version, deployment=state))

    def remove(self) -> None:
        self._stack.workspace.remove_stack(self.name)
