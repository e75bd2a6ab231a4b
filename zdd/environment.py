"""Where the project, its state and its tools are, and the environment every engine run gets."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from zdd.config_file import StackConfigFile
from zdd.registry import DEFAULT_TARGET

# Applies to stacks of the `local` target only; an Azure stack needs the user's own passphrase.
LOCAL_PASSPHRASE = "smooth-deploy-local"
# The state root, relative to the project; each stack's own files are in `stacks/<stack>`, apart
# from the folders shared by all stacks (`archive/`, `locks/`, `ports/`), so no stack name can
# reach another stack's files or the shared ones.
STATE_ROOT = ".zdd"


def stack_dir(state_root: Path, stack: str) -> Path:
    """The one folder a stack's processes, databases and logs live in (derived, never chosen)."""
    return state_root / "stacks" / stack


class LoggedComponent(StrEnum):
    """The components whose output a stack logs (locally, each to its own file in the stack's
    folder)."""

    PRIMARY = "primary"
    CLONE = "clone"
    FRONTDOOR = "frontdoor"
    # The stack's own database server (a site on PostgreSQL): `postgresql.log`.
    POSTGRESQL = "postgresql"
    # The clone's own cluster on PostgreSQL: `postgresql-clone.log`.
    POSTGRESQL_CLONE = "postgresql-clone"


def log_file(stack_folder: Path, component: str) -> Path:
    """The log of one of a local stack's components (`LoggedComponent`); its name is also the
    component's role in the owner id of its processes."""
    return stack_folder / f"{component}.log"


def ports_dir(state_root: Path) -> Path:
    """The registry of the local ports each stack holds (one file per port)."""
    return state_root / "ports"


def archive_dir(state_root: Path, stack: str) -> Path:
    """Where a stack's read-write clone archives are kept; it survives `zdd destroy`."""
    return state_root / "archive" / stack


def find_project_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").exists() and (candidate / "infra").is_dir():
            return candidate
    # Installed in editable mode: the package sits in the project.
    return Path(__file__).resolve().parents[1]


# The bundled sample site's two releases: what `zdd demo`, `make chaos` and `make bench` ship
# (v1 -> v2, with a schema migration between them).
SAMPLE_FROM_VERSION, SAMPLE_TO_VERSION = "v1", "v2"


@dataclass(frozen=True)
class Environment:
    root: Path

    @property
    def venv_bin(self) -> Path:
        return Path(sys.executable).parent

    @property
    def state_root(self) -> Path:
        """Runtime files of the local target (databases, logs, archives, driver locks)."""
        return self.root / STATE_ROOT

    def stack_dir(self, stack: str) -> Path:
        return stack_dir(self.state_root, stack)

    @property
    def sample_app(self) -> Path:
        """The bundled sample site's app spec: what a local stack runs when given no other."""
        return self.root / "apps" / "sample" / "app.yaml"

    def sample_app_on(self, engine: str) -> Path:
        """The sample site's app spec on a database engine (`sqlite`, `postgresql`)."""
        return (
            self.sample_app
            if engine == "sqlite"
            else self.sample_app.with_name(f"app-{engine}.yaml")
        )

    def policy_packs(self) -> list[str]:
        """The policy pack every update runs: `policies/`, another one named by
        ZDD_POLICY_PACK, or none with ZDD_POLICY_PACK=none."""
        chosen = os.environ.get("ZDD_POLICY_PACK")
        if chosen == "none":
            return []
        pack = Path(chosen) if chosen else self.root / "policies"
        return [str(pack.resolve())] if (pack / "PulumiPolicy.yaml").exists() else []

    def stack_target(self, stack: str) -> str:
        """The `zdd:target` in a stack's config file, read without the engine (the default if
        none)."""
        return StackConfigFile(self.root, stack).values(strict=False).get("target", DEFAULT_TARGET)

    def engine_env(self, *, local: bool = True) -> dict[str, str]:
        """Variables for the Pulumi CLI: no update check, no plugin downloads, local state.

        A user's own PULUMI_BACKEND_URL, PULUMI_HOME and passphrase win over our defaults.
        """
        env = {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_BACKEND_URL": os.environ.get(
                "PULUMI_BACKEND_URL", f"file://{self.root / '.pulumi-state'}"
            ),
            "PULUMI_HOME": os.environ.get("PULUMI_HOME", str(self.root / ".pulumi-home")),
            # Our language host and the dynamic provider live in the virtual environment.
            "PATH": f"{self.venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_PYTHON_CMD": sys.executable,
            # The CLI allocates most of what it ever holds while it starts (every backend and
            # plugin registers itself), and Go's default target collects several times during
            # that: at 400 a command costs a fifth less CPU (0.13 s against 0.17 s for
            # `stack export`, 1.08 against 1.17 s for a small update) for ~30 MB more memory.
            "GOGC": os.environ.get("GOGC", "400"),
        }
        has_passphrase = "PULUMI_CONFIG_PASSPHRASE" in os.environ or (
            "PULUMI_CONFIG_PASSPHRASE_FILE" in os.environ
        )
        if local and not has_passphrase:
            env["PULUMI_CONFIG_PASSPHRASE"] = LOCAL_PASSPHRASE
        return env

    def apply(self, *, local: bool = True) -> None:
        """Export the engine environment into this process (the Automation API inherits it)."""
        os.environ.update(self.engine_env(local=local))
        Path(os.environ["PULUMI_HOME"]).mkdir(parents=True, exist_ok=True)
        backend = os.environ["PULUMI_BACKEND_URL"]
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
