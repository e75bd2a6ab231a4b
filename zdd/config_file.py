"""The one place that knows how a stack's config file is laid out: `stacks/Pulumi.<stack>.yaml`
(the project's `stackConfigDir`), a `config:` map of `zdd:<key>` entries.

The driver reads and writes it directly, with no CLI process: a read is a file read, and a
change is one atomic replace, so a crash leaves either the old config or the new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zdd.errors import BadInput

NAMESPACE = "zdd"
# The project's `stackConfigDir` (Pulumi.yaml), relative to the project's folder.
STACK_CONFIG_DIR = "stacks"


def config_path(root: Path, stack: str) -> Path:
    return root / STACK_CONFIG_DIR / f"Pulumi.{stack}.yaml"


def _is_secure(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _text(value: object) -> str:
    """A config value as the CLI prints it: structured values as JSON, booleans lower case."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class StackConfigFile:
    root: Path
    stack: str

    @property
    def path(self) -> Path:
        return config_path(self.root, self.stack)

    def document(self, *, strict: bool = True) -> dict[str, Any]:
        """The whole file ({} when there is none); a file that is not a config map is bad input,
        or {} when not `strict` (a reader that only peeks)."""
        try:
            document = yaml.safe_load(self.path.read_text()) or {}
        except FileNotFoundError:
            return {}
        except (OSError, yaml.YAMLError) as exc:
            if not strict:
                return {}
            problem = str(exc).splitlines()[0]
            raise BadInput(
                f"cannot read the config of stack {self.stack!r} ({self.path}): {problem}"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
            if not strict:
                return {}
            raise BadInput(f"the config of stack {self.stack!r} ({self.path}) is not a map")
        return document

    def values(self, *, strict: bool = True) -> dict[str, str]:
        """The plain `zdd:*` values, keys without the namespace; secrets (still encrypted) left
        out."""
        prefix = f"{NAMESPACE}:"
        entries = self.document(strict=strict).get("config") or {}
        return {
            key.removeprefix(prefix): _text(value)
            for key, value in entries.items()
            if key.startswith(prefix) and not _is_secure(value)
        }

    def changed(self, change: Mapping[str, str | None], *, strict: bool = True) -> dict[str, Any]:
        """The file's document with `zdd:*` keys set (or, with None, removed)."""
        document = self.document(strict=strict)
        entries = document.get("config") or {}
        document["config"] = entries
        for key, value in change.items():
            if value is None:
                entries.pop(f"{NAMESPACE}:{key}", None)
            else:
                entries[f"{NAMESPACE}:{key}"] = str(value)
        return document

    def write(self, document: Mapping[str, Any]) -> None:
        """Replace the file in one step."""
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(yaml.safe_dump(dict(document), sort_keys=True))
        os.replace(partial, self.path)
