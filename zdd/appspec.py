"""The app spec: how the platform runs a site it did not write (releases, start, migrate, health).

Pure: no Pulumi and no I/O. The driver reads the spec file and stores it in the stack config as
one value, `zdd:app` (JSON, release paths made absolute), so a stack holds everything it needs;
the Pulumi program reads it back from there. An example, `apps/sample/app.yaml`::

    # Where a version's code is: one folder per version, made by the site's own build.
    # A relative template is resolved against the spec file's folder by `zdd init`.
    releases: releases/{version}
    # argv, run from the release folder, never through a shell. A relative program path
    # (with a '/') is taken inside the release folder.
    start: [bin/sampleapp, serve, --instance, "{instance}", --database-mode, "{database_mode}",
            --database, "{database}", --port, "{port}"]
    env: {}                         # extra environment variables, same placeholders
    # Brings the primary database to the release's schema; [] for sites that migrate on start.
    migrate: [bin/sampleapp, migrate, --database, "{database}"]
    health:
      path: /healthz                # answers 2xx once the site is ready
      timeoutSeconds: 30            # how long to wait for it (start and gates)
    probe: {}                       # optional: what the load probe reads and writes
    database: {engine: sqlite}      # or postgresql: one PostgreSQL cluster per stack

Placeholders the platform fills (`{{` and `}}` stand for literal braces):

- `{port}`: the port the site must listen on (127.0.0.1);
- `{database}`: the SQLite file; `{database_url}`: its URL, `sqlite:////ABSOLUTE/PATH`, the
  form SQLAlchemy and Django's dj-database-url both read (a read-only clone's file is marked
  read-only in its own header, so SQLite refuses its writes whatever the site opens it with);
  with `database: {engine: postgresql}`, `{database}` is the database's name in the stack's
  cluster and `{database_url}` is `postgresql://ROLE:PASSWORD@127.0.0.1:PORT/NAME`, which
  SQLAlchemy 2.1 (psycopg 3 by default), dj-database-url, psycopg and libpq all read (a
  read-only clone logs in as a role that may only read, in a database whose transactions are
  read-only);
- `{files}`: the site's persistent files folder (uploads, media): one per database
  generation, copied into the clone, part of every restore point, restored with the database;
- `{database_mode}`: `ReadOnly` or `ReadWrite`; `{instance}`: `primary` or `clone`;
- `{version}`: the version label; `{release}`: the release folder.

On a cloud target (Azure) `releases` is what the web app fetches itself: a container image
with `{version}` in its tag (`example.azurecr.io/site:{version}`) or an https package URL.
There `start` is optional (the image's own command by default), `migrate` and `digest` run on
the machine that runs the update (a relative program path is taken in the spec file's folder),
the database arrives in environment variables, and the placeholders are `{port}` (the
container's), `{database}` (the database's name), `{database_mode}`, `{instance}` and
`{version}`. `digest` prints a digest of the database's content: the restore point records it,
since the platform cannot read that database itself.
"""

from __future__ import annotations

import json
import posixpath
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from zdd.errors import BadInput
from zdd.phases import DatabaseMode

# The stack config key (namespace `zdd`) that holds the spec.
CONFIG_KEY = "app"
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_HEALTH_TIMEOUT_SECONDS = 30.0
MAX_HEALTH_TIMEOUT_SECONDS = 3600.0
# `releases` holds it once: where each version's code is.
VERSION_PLACEHOLDER = "{version}"
PLACEHOLDERS = frozenset(
    {"port", "database", "database_url", "files", "database_mode", "instance", "version", "release"}
)
# What a cloud web app can be told: it runs elsewhere, with no file or folder of this machine.
REMOTE_PLACEHOLDERS = frozenset({"port", "database", "database_mode", "instance", "version"})
# A cloud web app pulls its image or package and starts in minutes, not seconds.
DEFAULT_REMOTE_HEALTH_TIMEOUT_SECONDS = 600.0
_FIELDS = ("releases", "start", "env", "migrate", "digest", "health", "probe", "database")
# An image name before its tag: [registry[:port]/]path, lower case (the Docker reference).
_IMAGE_NAME_RE = re.compile(
    r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)+$"
    r"|^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
)
_HEALTH_FIELDS = ("path", "timeoutSeconds")


class InvalidAppSpec(BadInput, ValueError):
    """The app spec cannot be used; the message names the field and the fix."""


class DatabaseEngine(StrEnum):
    """What holds the site's database on the local target."""

    SQLITE = "sqlite"  # a file per database generation
    POSTGRESQL = "postgresql"  # a database per generation in the stack's PostgreSQL cluster


class ReleaseKind(StrEnum):
    """Where a version's code is, as `releases` says it."""

    FOLDER = "folder"  # a folder on this machine (the local target)
    IMAGE = "image"  # a container image, `{version}` in its tag (a cloud target)
    PACKAGE = "package"  # an https URL of a zip package (a cloud target)


def release_kind(template: str) -> ReleaseKind:
    """What a `releases` template names: an https URL is a package, `name:tag` with
    `{version}` in the tag an image, anything else a folder."""
    if template.startswith("https://"):
        return ReleaseKind.PACKAGE
    name, colon, tag = template.rpartition(":")
    if colon and "/" not in tag and VERSION_PLACEHOLDER in tag and _IMAGE_NAME_RE.match(name):
        return ReleaseKind.IMAGE
    return ReleaseKind.FOLDER


@dataclass(frozen=True)
class HealthCheck:
    path: str = DEFAULT_HEALTH_PATH
    timeout_seconds: float = DEFAULT_HEALTH_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Placement:
    """Where and how one web app instance runs: the values its placeholders take."""

    version: str
    release: str
    instance: str
    database_mode: DatabaseMode
    database: str
    files: str
    port: int
    # A database server's URL (credentials included); None: `database` is a SQLite file.
    server_url: str | None = None

    @property
    def database_url(self) -> str:
        # The plain form every framework's URL parser reads (SQLAlchemy, dj-database-url, ...):
        # a read-only clone's file refuses writes by itself, so the URL needs no options.
        return self.server_url or f"sqlite:///{self.database}"

    def values(self) -> dict[str, str]:
        return {
            "port": str(self.port),
            "database": self.database,
            "database_url": self.database_url,
            "files": self.files,
            "database_mode": str(self.database_mode),
            "instance": self.instance,
            "version": self.version,
            "release": self.release,
        }


@dataclass(frozen=True)
class AppSpec:
    """A site as the platform runs it; `releases` is absolute once stored in a stack."""

    releases: str
    # Empty only for an image or package release (its own start command).
    start: tuple[str, ...]
    migrate: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    health: HealthCheck = field(default_factory=HealthCheck)
    # Free-form: read by the load probe, not by the platform.
    probe: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Prints a digest of the database's content (a cloud target's restore point records it).
    digest: tuple[str, ...] = ()
    # What holds the database on the local target.
    engine: DatabaseEngine = DatabaseEngine.SQLITE

    @property
    def release_kind(self) -> ReleaseKind:
        return release_kind(self.releases)

    def release(self, version: str) -> str:
        """The release folder of `version` (a version never holds a '/': see is_valid_version)."""
        return self.releases.format(version=version)

    def start_command(self, placement: Placement) -> list[str]:
        return _command(self.start, placement, "start")

    def migrate_command(self, placement: Placement) -> list[str]:
        return _command(self.migrate, placement, "migrate") if self.migrate else []

    def environment(self, placement: Placement) -> dict[str, str]:
        return {name: fill(value, placement.values()) for name, value in self.env.items()}

    def to_config(self) -> str:
        """The `zdd:app` config value."""
        document: dict[str, Any] = {
            "releases": self.releases,
            "start": list(self.start),
            "migrate": list(self.migrate),
            "env": dict(self.env),
            "health": {"path": self.health.path, "timeoutSeconds": self.health.timeout_seconds},
        }
        if self.probe:
            document["probe"] = dict(self.probe)
        if self.digest:
            document["digest"] = list(self.digest)
        # Only when not the default: the stored spec of a SQLite site stays what it was.
        if self.engine is not DatabaseEngine.SQLITE:
            document["database"] = {"engine": str(self.engine)}
        return json.dumps(document, sort_keys=True)


def check_same_engine(running: AppSpec | None, new: AppSpec) -> None:
    """A stack keeps its database engine: a new spec on another one would start the site on an
    empty database, with the data left behind in the old one."""
    if running is not None and running.engine is not new.engine:
        raise InvalidAppSpec(
            f"the stack's site runs on {running.engine} and the new app spec asks for "
            f"{new.engine}; a stack keeps its database engine: move the data with a new stack"
        )


def read_file(path: Path) -> AppSpec:
    """The app spec in the file at `path` (`zdd init --app`, `zdd app set`)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidAppSpec(f"cannot read the app spec {path}: {exc.strerror}") from None
    try:
        return parse_file_text(text, str(path.resolve().parent))
    except InvalidAppSpec as exc:
        raise InvalidAppSpec(f"{path}: {exc}") from None


def parse_file_text(text: str, folder: str) -> AppSpec:
    """A spec file's content; a relative `releases` is resolved against `folder` (absolute)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidAppSpec(f"the app spec is not valid YAML{where}; fix its syntax") from None
    return from_document(document, folder)


def from_config(values: Mapping[str, str]) -> AppSpec | None:
    """The spec a stack's `zdd:*` config holds, or None when it holds none."""
    raw = values.get(CONFIG_KEY)
    if not raw:
        return None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidAppSpec(
            f"zdd:{CONFIG_KEY} is not a JSON object; set it again with `zdd app set`"
        ) from None
    return from_document(document, None)


def health_check_of(values: Mapping[str, str]) -> HealthCheck | None:
    """What the gates check: the health of the stack's spec, None for a stack with none."""
    spec = from_config(values)
    return spec.health if spec is not None else None


def from_document(document: object, folder: str | None) -> AppSpec:
    """Validate a parsed spec. With `folder` None (a stored spec) `releases` must be absolute."""
    if not isinstance(document, Mapping):
        raise InvalidAppSpec("the app spec must be a mapping with `releases`, `start`, ...")
    unknown = sorted(set(map(str, document)) - set(_FIELDS))
    if unknown:
        raise InvalidAppSpec(
            f"app spec field `{unknown[0]}` is unknown; the fields are: {', '.join(_FIELDS)}"
        )
    releases = _releases(document.get("releases"), folder)
    remote = release_kind(releases) is not ReleaseKind.FOLDER
    known = REMOTE_PLACEHOLDERS if remote else PLACEHOLDERS
    return AppSpec(
        releases=releases,
        start=_argv(document.get("start"), "start", required=not remote, known=known),
        migrate=_operator_program(
            _argv(document.get("migrate"), "migrate", required=False, known=known),
            "migrate",
            folder,
            remote=remote,
        ),
        env=MappingProxyType(_env(document.get("env"), known)),
        health=_health(
            document.get("health"),
            DEFAULT_REMOTE_HEALTH_TIMEOUT_SECONDS if remote else DEFAULT_HEALTH_TIMEOUT_SECONDS,
        ),
        probe=MappingProxyType(_mapping(document.get("probe"), "probe")),
        digest=_operator_program(
            _argv(document.get("digest"), "digest", required=False, known=known),
            "digest",
            folder,
            remote=remote,
        ),
        engine=_engine(document.get("database")),
    )


def _engine(value: object) -> DatabaseEngine:
    database = _mapping(value, "database")
    unknown = sorted(set(database) - {"engine"})
    if unknown:
        raise InvalidAppSpec(f"app spec field `database.{unknown[0]}` is unknown; use `engine`")
    raw = database.get("engine", DatabaseEngine.SQLITE)
    try:
        return DatabaseEngine(raw)
    except ValueError:
        allowed = ", ".join(engine.value for engine in DatabaseEngine)
        raise InvalidAppSpec(
            f"app spec field `database.engine` {raw!r} is not one of: {allowed}"
        ) from None


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with its placeholders replaced; an unknown placeholder is refused."""
    check_placeholders(template, "a value")
    return template.format_map(values)


def check_placeholders(template: str, where: str, known: frozenset[str] = PLACEHOLDERS) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        raise InvalidAppSpec(
            f"{where} {template!r} has an unmatched brace; write {{{{ or }}}} for a literal one"
        ) from None
    for _text, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in known or spec or conversion:
            listed = ", ".join(f"{{{p}}}" for p in sorted(known))
            raise InvalidAppSpec(f"{where} {template!r}: unknown placeholder; use one of {listed}")


def _command(argv: tuple[str, ...], placement: Placement, what: str) -> list[str]:
    filled = [fill(arg, placement.values()) for arg in argv]
    program = filled[0]
    # Like a shell would, but without one: a program path is inside the release.
    if "/" in program and not posixpath.isabs(program):
        filled[0] = posixpath.join(placement.release, program)
    return filled


def _releases(value: object, folder: str | None) -> str:
    if not isinstance(value, str) or VERSION_PLACEHOLDER not in value:
        raise InvalidAppSpec(
            "app spec field `releases` must be a folder template holding {version}, "
            "e.g. `releases/{version}`"
        )
    check_placeholders(value, "app spec field `releases`")
    if _placeholders(value) != ["version"]:
        raise InvalidAppSpec(
            "app spec field `releases` may hold {version} once and no other placeholder"
        )
    if "://" in value and release_kind(value) is not ReleaseKind.PACKAGE:
        raise InvalidAppSpec(f"app spec field `releases` {value!r}: a package URL must be https://")
    if release_kind(value) is not ReleaseKind.FOLDER:
        return value
    if posixpath.isabs(value):
        return posixpath.normpath(value)
    if folder is None:
        raise InvalidAppSpec(
            f"zdd:{CONFIG_KEY} `releases` must be an absolute path; set it with `zdd app set`"
        )
    return posixpath.normpath(posixpath.join(folder, value))


def _placeholders(template: str) -> list[str]:
    return [name for _t, name, _s, _c in string.Formatter().parse(template) if name is not None]


def _argv(
    value: object, name: str, *, required: bool, known: frozenset[str] = PLACEHOLDERS
) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if (
        not isinstance(value, list)
        or not all(isinstance(arg, str) for arg in value)
        or (required and not value)
    ):
        shape = "a non-empty list" if required else "a list (may be empty)"
        raise InvalidAppSpec(
            f"app spec field `{name}` must be {shape} of strings: the program and its "
            "arguments (argv, never a shell command line)"
        )
    for arg in value:
        check_placeholders(arg, f"app spec field `{name}`:", known)
    if value and not value[0]:
        raise InvalidAppSpec(f"app spec field `{name}` names no program (its first item is empty)")
    return tuple(value)


def _operator_program(
    argv: tuple[str, ...], name: str, folder: str | None, *, remote: bool
) -> tuple[str, ...]:
    """With a cloud release there is no release folder on this machine: a relative program
    path is taken in the spec file's folder (made absolute when the spec is stored)."""
    if not remote or not argv or "/" not in argv[0] or posixpath.isabs(argv[0]):
        return argv
    if folder is None:
        raise InvalidAppSpec(
            f"zdd:{CONFIG_KEY} `{name}` program {argv[0]!r} must be an absolute path or a "
            "command on PATH; set it with `zdd app set`"
        )
    return (posixpath.normpath(posixpath.join(folder, argv[0])), *argv[1:])


def _env(value: object, known: frozenset[str] = PLACEHOLDERS) -> dict[str, str]:
    variables = _mapping(value, "env")
    for key, item in variables.items():
        if not isinstance(item, str) or not key or "=" in key:
            raise InvalidAppSpec(
                f"app spec field `env`: {key!r} must be a variable name with a string value "
                "(quote numbers)"
            )
        check_placeholders(item, f"app spec field `env` ({key}):", known)
    return dict(variables)


def _mapping(value: object, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidAppSpec(f"app spec field `{name}` must be a mapping")
    return {str(k): v for k, v in value.items()}


def _health(value: object, default_timeout: float = DEFAULT_HEALTH_TIMEOUT_SECONDS) -> HealthCheck:
    health = _mapping(value, "health")
    unknown = sorted(set(health) - set(_HEALTH_FIELDS))
    if unknown:
        raise InvalidAppSpec(
            f"app spec field `health.{unknown[0]}` is unknown; use `path` and `timeoutSeconds`"
        )
    path = health.get("path", DEFAULT_HEALTH_PATH)
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise InvalidAppSpec(
            "app spec field `health.path` must be a URL path starting with '/', e.g. /healthz"
        )
    timeout = health.get("timeoutSeconds", default_timeout)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_HEALTH_TIMEOUT_SECONDS
    ):
        raise InvalidAppSpec(
            "app spec field `health.timeoutSeconds` must be a number of seconds above 0, at "
            f"most {MAX_HEALTH_TIMEOUT_SECONDS:.0f}"
        )
    return HealthCheck(path=path, timeout_seconds=float(timeout))
