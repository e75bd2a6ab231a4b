"""A thin wrapper around one Automation API stack: config, updates, outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from pulumi import automation as auto

# Not re-exported by `pulumi.automation`; `_EventedStack` is built with it, as `Stack.select` does.
from pulumi.automation._stack import StackInitMode
from semver import VersionInfo

from zdd.config_file import NAMESPACE, StackConfigFile
from zdd.console import Say
from zdd.environment import Environment
from zdd.errors import BadInput, EngineFailed, GateFailed, PolicyViolation
from zdd.phases import (
    CUTOVER_SUFFIX,
    MIGRATION_SUFFIX,
    PROGRAM_GATE_SUFFIXES,
    RESTORE_POINT_SUFFIX,
    RestorePointTaken,
)
from zdd.processes import find_by_command_line, terminate

# Config keys stored encrypted (an Azure stack's generated SQL administrator password).
SECRET_KEYS = frozenset({"sqlAdminPassword"})
# How the engine's events show a secret value.
SECRET_MASK = "[secret]"
_STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Updates asked of the CLI per page of a stack's history (each page is one CLI run).
HISTORY_PAGE_SIZE = 100
# This process's workspaces, by project folder and engine environment (see `Stack._workspace`).
_WORKSPACES: dict[tuple[str, tuple[tuple[str, str], ...]], auto.LocalWorkspace] = {}
# Opening a stack the way `mode` says fails with the engine's error: what the user is told.
_OPEN_REFUSALS: dict[StackInitMode, tuple[type[Exception], str]] = {
    StackInitMode.CREATE: (
        auto.StackAlreadyExistsError,
        "stack {name!r} already exists; use it, or destroy it first",
    ),
    StackInitMode.SELECT: (
        auto.StackNotFoundError,
        "no stack named {name!r}; create it with `zdd init`",
    ),
}


class _KnownCli(auto.PulumiCommand):
    """The Pulumi CLI on the PATH, with a version this machine already asked it for.

    `auto.PulumiCommand()` runs `pulumi version` (a CLI start, the cost of a small update's
    bookkeeping) in every process that makes a workspace; each `zdd` command is one."""

    def __init__(self, version: VersionInfo) -> None:  # not super's: that asks the CLI again
        self.command = "pulumi"
        self.version = version


def _pulumi_command(env: Environment, path: str) -> auto.PulumiCommand:
    """The CLI that `path` finds, its version read from `.zdd/cli-version.json` when that
    names the same binary (path, size, modification time); otherwise asked (and checked
    against the Automation API's minimum) and written there."""
    binary = shutil.which("pulumi", path=path)
    if binary is None:
        return auto.PulumiCommand()  # fails as the Automation API would, with its message
    found = Path(binary).resolve().stat()
    key = f"{Path(binary).resolve()}:{found.st_size}:{found.st_mtime_ns}"
    cache = env.state_root / "cli-version.json"
    try:
        known = json.loads(cache.read_text())
        if known.get("binary") == key:
            return _KnownCli(VersionInfo.parse(known["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    command = auto.PulumiCommand()
    if command.version is not None:
        written = cache.with_suffix(f".{os.getpid()}.tmp")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            written.write_text(json.dumps({"binary": key, "version": str(command.version)}))
            written.replace(cache)
        except OSError:
            pass  # only a saving: a folder we may not write to asks the CLI every time
    return command


def _holds_mask(value: object) -> bool:
    """Whether a masked secret is in `value`, at any depth (a secret object keeps its keys and
    shows its values masked)."""
    if isinstance(value, dict):
        return any(_holds_mask(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_mask(item) for item in value)
    return value == SECRET_MASK


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
    # Seconds from the engine's start of each changed resource's step to its end, by name
    # (resources that do work, not the components that group them).
    step_seconds: dict[str, float] = field(default_factory=dict)


def is_leaf_resource(resource_type: str) -> bool:
    """A resource that does work itself: not a component (`zdd:`) or the stack (`pulumi:`)."""
    return resource_type.startswith("pulumi-python:dynamic") or not (
        resource_type.startswith(("zdd:", "pulumi:"))
    )


class _ChangeLog:
    """Collects the engine's step events: which resource, which operation."""

    _QUIET = frozenset({"same", "read", "refresh"})

    def __init__(self) -> None:
        self.changed: list[tuple[str, str]] = []
        self.step_seconds: dict[str, float] = {}
        self._begun: dict[str, float] = {}
        # When the engine finished changing a front door resource (epoch seconds): the
        # moment public traffic moved, whatever the target.
        self.front_door_changed_at: float | None = None
        # "policy: message" of every mandatory policy that refused something.
        self.violations: list[str] = []
        # The resources whose step failed.
        self.failed: list[str] = []
        # When a switch to the clone of the program's own was made (epoch seconds, as its
        # resource recorded it), if this update made one.
        self.switched_to_clone_at: float | None = None
        # The stack's outputs and the update's summary, as the engine reported them.
        self.outputs: dict[str, Any] | None = None
        self.summary: auto.events.SummaryEvent | None = None

    @staticmethod
    def _op(metadata: Any) -> str:
        return str(metadata.op.value if hasattr(metadata.op, "value") else metadata.op)

    def __call__(self, event: auto.EngineEvent) -> None:
        policy = event.policy_event
        if policy is not None and policy.enforcement_level == "mandatory":
            where = (policy.resource_urn or "").rsplit("::", 1)[-1] or "the stack"
            first_line = policy.message.strip().splitlines()[0] if policy.message.strip() else ""
            self.violations.append(f"{policy.policy_name} ({where}): {first_line}")
        if event.summary_event is not None:
            self.summary = event.summary_event
        if (failed := event.res_op_failed_event) is not None:
            self.failed.append(failed.metadata.urn.rsplit("::", 1)[-1])
        pre, done = event.resource_pre_event, event.res_outputs_event
        if done is not None and done.metadata.type == "pulumi:pulumi:Stack":
            state = done.metadata.new
            self.outputs = dict(state.outputs or {}) if state is not None else {}
        now = time.time()
        if pre is not None:
            op = self._op(pre.metadata)
            if op not in self._QUIET and pre.metadata.type != "pulumi:pulumi:Stack":
                self.changed.append((pre.metadata.urn.rsplit("::", 1)[-1], op))
                self._begun[pre.metadata.urn] = now
        elif done is not None:
            began = self._begun.pop(done.metadata.urn, None)
            if began is not None and done.metadata.urn.endswith(CUTOVER_SUFFIX):
                state = done.metadata.new
                at = (state.outputs or {}).get("switched_at") if state is not None else None
                self.switched_to_clone_at = float(at) if isinstance(at, int | float) else now
            if began is not None and is_leaf_resource(done.metadata.type):
                name = done.metadata.urn.rsplit("::", 1)[-1]
                self.step_seconds[name] = self.step_seconds.get(name, 0.0) + now - began
            if "FrontDoor$" in done.metadata.urn and self._op(done.metadata) not in self._QUIET:
                self.front_door_changed_at = now


@dataclass(frozen=True)
class StateEvidence:
    """The resources of a stack's state, as an update that may have failed afterwards left
    them: what it really did to the primary, whatever the config asked for."""

    resources: tuple[Mapping[str, Any], ...]

    def _named(self, suffix: str) -> Iterator[Mapping[str, Any]]:
        return (r for r in self.resources if str(r.get("urn", "")).endswith(suffix))

    def restore_point(self, restore_point: str | None) -> RestorePointTaken | None:
        """The restore point `restore_point` as its resource recorded it when taken, or None
        if none was."""
        for resource in self._named(RESTORE_POINT_SUFFIX):
            taken = RestorePointTaken.from_record(resource.get("outputs"))
            if taken is not None and taken.id == restore_point:
                return taken
        return None

    @property
    def switched_to_clone(self) -> bool:
        """A switch to the clone of the program's own was made: the clone holds the traffic."""
        return any(True for _ in self._named(CUTOVER_SUFFIX))

    @property
    def schema(self) -> str | None:
        """The version the primary database's last successful migration applied (a failed
        migration leaves the one before), or None when the state has no migration resource."""
        for resource in self._named(f"primary-db{MIGRATION_SUFFIX}"):
            version = (resource.get("outputs") or {}).get("version")
            return str(version) if version else None
        return None


class _EventedStack(auto.Stack):
    """An Automation API stack whose `up` does not read the outputs and the summary again with
    three more CLI runs (`stack output` with and without `--show-secrets`, `stack history`)
    once the update is over: the wrapper takes both from the update's own engine events.

    `auto.Stack.select` and `create` build a plain `auto.Stack` whatever class they are called
    on, so this one is built with its constructor."""

    reads_after_up = True

    def outputs(self) -> auto.OutputMap:
        return super().outputs() if self.reads_after_up else {}

    def info(self, show_secrets: bool = True) -> auto.UpdateSummary | None:
        if self.reads_after_up:
            return super().info(show_secrets)
        return auto.UpdateSummary("update", datetime.now(UTC), "", {}, {}, "succeeded")


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


def _stop_orphaned_plugins(say: Say) -> None:
    """Stop this project's engine plugins whose update is gone (no CLI above them any more)."""
    interpreter = str(Path(sys.prefix) / "bin")
    for pid in find_by_command_line(interpreter):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmdline for m in _PLUGIN_MODULES) and not _under_a_pulumi_cli(pid):
            say(f"stopping plugin process {pid} of the update that died")
            terminate(pid, timeout=2)


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

    def __init__(self, env: Environment, name: str, stack: _EventedStack) -> None:
        self.env = env
        self.name = name
        self._stack = stack
        # Also told every engine event of this stack's updates (a benchmark's instruments).
        self.event_hooks: list[Callable[[auto.EngineEvent], None]] = []
        # Each CLI call costs the better part of a second; what this wrapper wrote or the last
        # update returned is known without asking again.
        self._config: dict[str, str] | None = None
        # The config file as `_config` was read from it: another writer (a second driver object,
        # `pulumi config set` by hand) replaces the file, and the next read sees it.
        self._config_read_from: tuple[int, int, int] | None = None
        self._outputs: dict[str, Any] | None = None
        # The switch to the clone the last update made, if it made one (kept when it failed).
        self.switched_to_clone_at: float | None = None

    @classmethod
    def _options(cls, env: Environment) -> auto.LocalWorkspaceOptions:
        return auto.LocalWorkspaceOptions(work_dir=str(env.root), env_vars=env.engine_env())

    @classmethod
    def _workspace(cls, env: Environment) -> auto.LocalWorkspace:
        """One workspace per project and engine environment in a process."""
        options = cls._options(env)
        key = (str(env.root), tuple(sorted((options.env_vars or {}).items())))
        if key not in _WORKSPACES:
            path = (options.env_vars or {}).get("PATH", os.environ.get("PATH", ""))
            options.pulumi_command = _pulumi_command(env, path)
            _WORKSPACES[key] = auto.LocalWorkspace(**vars(options))
        return _WORKSPACES[key]

    @classmethod
    def exists(cls, env: Environment, name: str) -> bool:
        return any(s.name == name for s in cls._workspace(env).list_stacks())

    @classmethod
    def create(cls, env: Environment, name: str) -> Self:
        return cls._open(env, name, StackInitMode.CREATE)

    @classmethod
    def select(cls, env: Environment, name: str) -> Self:
        return cls._open(env, name, StackInitMode.SELECT)

    @classmethod
    def _open(cls, env: Environment, name: str, mode: StackInitMode) -> Self:
        check_stack_name(name)
        refused, refusal = _OPEN_REFUSALS[mode]
        try:
            stack = _EventedStack(name, cls._workspace(env), mode)
        except refused:
            raise BadInput(refusal.format(name=name)) from None
        return cls(env, name, stack)

    # -- config --------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self._file.path

    @property
    def _file(self) -> StackConfigFile:
        return StackConfigFile(self.env.root, self.name)

    def config(self) -> dict[str, str]:
        """The plain `zdd:*` config, keys without the namespace, read from the stack's config
        file (no CLI process). Secrets stay encrypted and are left out: the driver never needs
        them; structured values come back as JSON, as the CLI gives them."""
        try:
            found = self.config_file.stat()
            read_from = (found.st_ino, found.st_mtime_ns, found.st_size)
        except FileNotFoundError:
            read_from = None
        if self._config is None or read_from != self._config_read_from:
            self._config_read_from = read_from
            self._config = self._file.values()
        return dict(self._config)

    def set_config(self, values: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) `zdd:*` keys in one atomic write of the config file, so a
        crash leaves either the old config or the new one, never a mix."""
        secrets = {k: v for k, v in values.items() if k in SECRET_KEYS and v is not None}
        if secrets:
            # Encrypting needs the stack's secrets provider: the CLI does it (only `init` sets one).
            self._stack.set_all_config(
                {f"{NAMESPACE}:{k}": auto.ConfigValue(v, secret=True) for k, v in secrets.items()}
            )
        self._file.write(self._file.changed({k: v for k, v in values.items() if k not in secrets}))
        self._config = None

    # -- engine --------------------------------------------------------------------------

    def up(
        self,
        on_output: Say | None = None,
        policy_packs: list[str] | None = None,
        **kwargs: Any,
    ) -> Outcome:
        self._outputs = None
        log = _ChangeLog()
        self._stack.reads_after_up = False
        self.switched_to_clone_at = None
        try:
            self._stack.up(
                on_output=on_output,
                on_event=self._told(log),
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
            if any(name.endswith(PROGRAM_GATE_SUFFIXES) for name in log.failed):
                # The program's own gate: nothing that waits for it (the primary's changes after
                # the drain, the switch back after the verification) was done.
                raise GateFailed(
                    f"pulumi up on stack {self.name!r} stopped at a gate:\n{_error_text(exc)}"
                ) from None
            raise EngineFailed(
                f"pulumi up failed on stack {self.name!r}:\n{_error_text(exc)}"
            ) from None
        finally:
            self._stack.reads_after_up = True
            self.switched_to_clone_at = log.switched_to_clone_at
        # Secret outputs reach the events masked: those (and only those) are read from the CLI.
        masked = log.outputs is None or _holds_mask(log.outputs)
        self._outputs = None if masked else log.outputs
        summary = log.summary
        seconds = float(summary.duration_seconds) if summary else 0.0
        changes = {str(op): n for op, n in (summary.resource_changes if summary else {}).items()}
        return Outcome(
            changes, seconds, log.changed, log.front_door_changed_at, dict(log.step_seconds)
        )

    def _told(self, log: _ChangeLog) -> Callable[[auto.EngineEvent], None]:
        def tell(event: auto.EngineEvent) -> None:
            log(event)
            for hook in self.event_hooks:
                hook(event)

        return tell

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
            self._outputs = self._read_outputs()
        return dict(self._outputs)

    def _read_outputs(self) -> dict[str, Any]:
        """The outputs in one CLI run; a second run, which derives the passphrase key, only
        when a value is secret (the Automation API always runs both)."""
        values: dict[str, Any] = json.loads(self._cli("stack", "output", "--json"))
        if _holds_mask(values):
            values = json.loads(self._cli("stack", "output", "--json", "--show-secrets"))
        return values

    def _cli(self, *args: str) -> str:
        workspace = self._stack.workspace
        done = workspace.pulumi_command.run(
            [*args, "--stack", self.name], self.env.root.as_posix(), workspace.env_vars
        )
        return done.stdout

    def _export(self) -> dict[str, Any]:
        """The stack's state as `pulumi stack export` writes it, secrets still encrypted: none
        of what the driver reads there is secret, and decrypting derives the passphrase key
        (the Automation API's `export_stack` always does). Imported back as it is."""
        exported: dict[str, Any] = json.loads(self._cli("stack", "export"))
        return exported

    def evidence(self) -> StateEvidence:
        """What the stack's state records of its updates, finished or not, in one read."""
        resources = (self._export().get("deployment") or {}).get("resources") or []
        return StateEvidence(tuple(resources))

    def destroy(self, on_output: Say | None = None) -> None:
        self._outputs = None
        try:
            self._stack.destroy(on_output=on_output, color="never")
        except auto.CommandError as exc:
            raise EngineFailed(
                f"pulumi destroy failed on stack {self.name!r}:\n{_error_text(exc)}"
            ) from None

    def history(self) -> list[auto.UpdateSummary]:
        """Every update of the stack, newest first. The CLI answers one page at a time (10
        updates unless told otherwise), so the pages are read until one comes back short."""
        updates: list[auto.UpdateSummary] = []
        page = 1
        while True:
            batch = self._stack.history(page_size=HISTORY_PAGE_SIZE, page=page, show_secrets=False)
            updates += batch
            if len(batch) < HISTORY_PAGE_SIZE:
                return updates
            page += 1

    def _lock_files(self) -> list[Path]:
        backend = os.environ.get("PULUMI_BACKEND_URL", "")
        if not backend.startswith("file://"):
            return []  # other backends release the locks of dead clients themselves
        locks = Path(backend.removeprefix("file://")) / ".pulumi" / "locks"
        return [p for p in locks.glob(f"*/*/{self.name}/*.json")]

    def wait_for_running_update(self, say: Say, timeout: float = 600) -> None:
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

    def drop_pending_operations(self, say: Say) -> None:
        """An update that was killed leaves pending operations that block the next one."""
        exported = self._export()
        state = dict(exported.get("deployment") or {})
        if state.get("pending_operations"):
            count = len(state["pending_operations"])
            say(f"dropping {count} pending operation(s) of an interrupted update")
            state["pending_operations"] = []
            self._stack.import_stack(
                auto.Deployment(version=exported.get("version"), deployment=state)
            )

    def remove(self) -> None:
        self._stack.workspace.remove_stack(self.name)
