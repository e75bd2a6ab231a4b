"""The `local` target's program side: its components bound to the stack's folder and ports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pulumi

from infra.components import DatabaseArgs, DatabaseLike
from infra.local.components import (
    LocalCutover,
    LocalDatabase,
    LocalFrontDoor,
    LocalSettings,
    LocalSite,
)
from infra.program import Target
from zdd import appspec
from zdd.appspec import AppSpec, DatabaseEngine
from zdd.environment import STATE_ROOT, archive_dir, ports_dir, stack_dir
from zdd.phases import OPERATIONAL_KEYS, InvalidStackConfig, check_operational_config


def local_target(config: pulumi.Config) -> Target:
    """The local components, bound to the stack's folder, ports and app spec."""
    state_root = Path(__file__).resolve().parents[2] / STATE_ROOT
    state_dir = stack_dir(state_root, pulumi.get_stack())
    # The folder follows from the stack's name; a config copied from another stack (or edited)
    # that names another folder is refused, never used.
    try:
        check_operational_config(
            {k: v for k in OPERATIONAL_KEYS if (v := config.get(k)) is not None}
        )
    except InvalidStackConfig as exc:
        raise pulumi.RunError(str(exc)) from None
    configured = config.get("stateDir")
    if configured is not None and Path(configured).resolve() != state_dir.resolve():
        raise pulumi.RunError(
            f"zdd:stateDir {configured!r} is not this stack's folder {state_dir}: remove it "
            "(`pulumi config rm zdd:stateDir`) or set it to that folder"
        )
    app = _app(config)
    settings = LocalSettings(
        state_dir=state_dir,
        base_port=config.require_int("basePort"),
        archive_dir=archive_dir(state_root, pulumi.get_stack()),
        archive_keep=int(config.get("archiveRetention") or 5),
        ports_dir=ports_dir(state_root),
        app=app,
        verify_within=float(config.get("gateTimeoutSeconds") or app.health.timeout_seconds),
    )
    return Target(
        name="local",
        database=_database_maker(settings),
        site=lambda name, args, opts: LocalSite(name, args, settings, opts),
        front_door=lambda name, args, opts: LocalFrontDoor(name, args, settings, opts),
        cutover=lambda name, args, opts: LocalCutover(name, args, settings, opts).switch,
    )


def _database_maker(
    settings: LocalSettings,
) -> Callable[[str, DatabaseArgs, pulumi.ResourceOptions | None], DatabaseLike]:
    """SQLite files, or databases of the stack's PostgreSQL cluster, which is declared with the
    first database (so it has the same options, the phase guard among them)."""
    if settings.app.engine is DatabaseEngine.SQLITE:
        return lambda name, args, opts: LocalDatabase(name, args, settings, opts)
    # Imported here: psycopg's import would slow every update of a SQLite stack.
    from infra.local.postgres_components import PostgresCluster, PostgresDatabase

    clusters: list[PostgresCluster] = []

    def database(
        name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None
    ) -> DatabaseLike:
        if not clusters:
            clusters.append(PostgresCluster("database-server", settings, opts))
        return PostgresDatabase(name, args, settings, clusters[0], opts)

    return database


def _app(config: pulumi.Config) -> AppSpec:
    """The site the stack runs, from `zdd:app` (which `zdd init` sets from the spec file)."""
    try:
        spec = appspec.from_config({appspec.CONFIG_KEY: config.get(appspec.CONFIG_KEY) or ""})
    except appspec.InvalidAppSpec as exc:
        raise pulumi.RunError(str(exc)) from None
    if spec is None:
        raise pulumi.RunError(
            f"zdd:{appspec.CONFIG_KEY} is not set: the stack does not say which site it runs; "
            "create stacks with `zdd init --app FILE`"
        )
    return spec
