"""Local target components: a SQLite database, a site process, a front door process (the
PostgreSQL database is in infra/local/postgres_components.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pulumi
from pulumi.dynamic import Resource

from infra.components import CutoverArgs, DatabaseArgs, FrontDoorArgs, SiteArgs
from infra.local import providers
from zdd.appspec import AppSpec, Placement
from zdd.environment import log_file
from zdd.phases import (
    CUTOVER_SUFFIX,
    DRAIN_TIMEOUT_SECONDS,
    MIGRATION_SUFFIX,
    RESTORE_POINT_SUFFIX,
    VERIFICATION_SUFFIX,
    DatabaseMode,
    Instance,
)
from zdd.sqlite_files import files_folder, restore_point_file_name


@dataclass(frozen=True)
class LocalSettings:
    state_dir: Path
    base_port: int
    # The site: what runs in each web app process and migrates the primary database.
    app: AppSpec
    # Read-write clone archives: where they go and how many are kept.
    archive_dir: Path
    # The registry of the ports every local stack holds.
    ports_dir: Path
    archive_keep: int = 5
    # How long a new primary may take to answer its health path as expected before the front
    # door switches back to it (the gates' own bound: the app spec's, or zdd:gateTimeoutSeconds).
    verify_within: float = 30.0
    # The interpreter that runs the site and the front door: the project's virtual environment,
    # named the same way however the program was started (so it never shows up as a change).
    python: str = str(Path(sys.prefix) / "bin" / "python")

    def port(self, role: str) -> int:
        roles = {"frontdoor": 0, "primary": 1, "clone": 2, "database": 3, "clone-database": 4}
        return self.base_port + roles[role]


@runtime_checkable
class PlacesSites(Protocol):
    """A database that says itself what its sites are told (a server's URL and role)."""

    def placement(
        self, version: str, instance: Instance, mode: DatabaseMode
    ) -> pulumi.Output[Placement]: ...


def restore_point_path(settings: LocalSettings, restore_point: str) -> Path:
    return settings.state_dir / restore_point_file_name(restore_point)


class _Dynamic(Resource):
    """A dynamic resource; `outputs` names the properties its provider adds at create."""

    def __init__(
        self,
        provider: Any,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
        outputs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(provider, name, {**dict.fromkeys(outputs), **props}, opts)

    def out(self, key: str) -> pulumi.Output[Any]:
        # The SDK sets one attribute per property once the resource is registered.
        value: pulumi.Output[Any] = getattr(self, key)
        return value


def _restore_point(
    parent: pulumi.Resource, name: str, provider: Any, inputs: dict[str, Any], args: DatabaseArgs
) -> tuple[_Dynamic, pulumi.Output[dict[str, Any]]]:
    """A database's restore point resource and its proof as the update that took it recorded
    it (the outputs `zdd.phases.RestorePointTaken` reads). It waits for the program's own
    switch to the clone, if there is one: the restore point is the first change of the primary."""
    point = _Dynamic(
        provider,
        f"{name}{RESTORE_POINT_SUFFIX}",
        inputs,
        pulumi.ResourceOptions(
            parent=parent, depends_on=[args.after] if args.after is not None else []
        ),
        outputs=("taken_at", "digest"),
    )
    taken = pulumi.Output.all(
        restore_point=point.out("restore_point"),
        taken_at=point.out("taken_at"),
        digest=point.out("digest"),
    )
    return point, taken


def _migration(
    parent: pulumi.Resource,
    name: str,
    settings: LocalSettings,
    args: DatabaseArgs,
    database_path: pulumi.Input[str],
    placement: pulumi.Output[Placement],
    restore_point: _Dynamic | None,
) -> _Dynamic:
    """The app spec's migration to `args.schema_version`, run once the restore point is
    recorded: no change to the database before it."""
    version = args.schema_version
    assert version is not None
    return _Dynamic(
        providers.MigrationProvider(),
        f"{name}{MIGRATION_SUFFIX}",
        {
            "database_path": database_path,
            "version": version,
            "generation": args.generation,
            "release": settings.app.release(version),
            "argv": placement.apply(settings.app.migrate_command),
            "env": placement.apply(settings.app.environment),
        },
        pulumi.ResourceOptions(parent=parent, depends_on=[restore_point] if restore_point else []),
    )


def _placement(
    settings: LocalSettings,
    version: str,
    instance: Instance,
    mode: DatabaseMode,
    database: pulumi.Output[str],
) -> pulumi.Output[Placement]:
    """The values an app spec's placeholders take for one instance (once its database exists)."""
    return database.apply(
        lambda path: Placement(
            version=version,
            release=settings.app.release(version),
            instance=str(instance),
            database_mode=mode,
            database=path,
            files=str(files_folder(Path(path))),
            port=settings.port(str(instance)),
        )
    )


class LocalDatabase(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:Database", name, None, opts)
        path = settings.state_dir / f"{args.role}-g{args.generation}.sqlite"
        self.restore_point_taken: pulumi.Output[dict[str, Any]] | None = None
        self.database_name: pulumi.Output[str] = pulumi.Output.from_input(path.name)
        if args.existing:
            # A primary generation a rollback with database left on disk (never deleted).
            self.connection: pulumi.Output[str] = pulumi.Output.from_input(str(path))
            self.archive: pulumi.Output[str] | None = None
            self.copy_digest: pulumi.Output[str] | None = None
            self.register_outputs({"connection": self.connection})
            return
        source: pulumi.Input[str] | None = None
        if args.copy_of is not None:
            source = args.copy_of.connection
        elif args.restored_from:
            source = str(restore_point_path(settings, args.restored_from))
        self.file = _Dynamic(
            providers.SqliteDatabaseProvider(),
            f"{name}-file",
            {
                "path": str(path),
                "source": source,
                "keep_baseline": args.keep_baseline,
                "read_only": args.read_only,
                "front_door_folder": str(settings.state_dir) if args.hold_writes_for_copy else None,
                "archive_dir": str(settings.archive_dir) if args.keep_baseline else None,
                "archive_keep": settings.archive_keep,
            },
            # A primary database file is never deleted by an update: a new generation (a
            # rollback with database) leaves the old one on disk as an archive.
            pulumi.ResourceOptions(parent=self, retain_on_delete=args.role is Instance.PRIMARY),
            outputs=("size_bytes", "copy_seconds", "archive_path", "digest"),
        )
        self.copy_digest = self.file.out("digest") if args.copy_of is not None else None
        self.archive = self.file.out("archive_path") if args.keep_baseline else None
        ready: pulumi.Output[Any] = self.file.id
        self.restore_point: _Dynamic | None = None
        if args.restore_point:
            self.restore_point, self.restore_point_taken = _restore_point(
                self,
                name,
                providers.RestorePointProvider(),
                {
                    "restore_point": args.restore_point,
                    "database_path": self.file.id.apply(lambda _: str(path)),
                    "backup_path": str(restore_point_path(settings, args.restore_point)),
                },
                args,
            )
        if args.schema_version:
            database_path = self.file.id.apply(lambda _: str(path))
            placement = _placement(
                settings,
                args.schema_version,
                Instance.PRIMARY,
                DatabaseMode.READ_WRITE,
                database_path,
            )
            ready = _migration(
                self, name, settings, args, database_path, placement, self.restore_point
            ).id
        self.connection = ready.apply(lambda _: str(path))
        self.register_outputs({"connection": self.connection})


class LocalSite(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: SiteArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:Site", name, None, opts)
        site, app = args.spec, settings.app
        placement = (
            args.database.placement(site.version, site.instance, site.database_mode)
            if isinstance(args.database, PlacesSites)
            else _placement(
                settings, site.version, site.instance, site.database_mode, args.database.connection
            )
        )
        self.process = _Dynamic(
            providers.WebAppProvider(),
            f"{name}-process",
            {
                "instance": str(site.instance),
                "version": site.version,
                "database_mode": str(site.database_mode),
                "release": app.release(site.version),
                "argv": placement.apply(app.start_command),
                "env": placement.apply(app.environment),
                "port": settings.port(str(site.instance)),
                "start_timeout": app.health.timeout_seconds,
                "log_path": str(log_file(settings.state_dir, str(site.instance))),
                "ports_dir": str(settings.ports_dir),
            },
            pulumi.ResourceOptions(parent=self),
            outputs=("pid", "url"),
        )
        self.url: pulumi.Output[str] = self.process.out("url")
        if site.verified:
            # The front door's switch waits for the site's address, so for this verification.
            verification = _Dynamic(
                providers.VerificationProvider(),
                f"{name}{VERIFICATION_SUFFIX}",
                {
                    "url": self.url,
                    "pid": self.process.out("pid"),
                    "version": site.version,
                    "instance": str(site.instance),
                    "database_mode": str(site.database_mode),
                    "health_path": app.health.path,
                    "timeout": settings.verify_within,
                },
                pulumi.ResourceOptions(parent=self),
            )
            self.url = verification.out("url")
        self.register_outputs({"url": self.url})


def _front_door_files(settings: LocalSettings) -> dict[str, Any]:
    """What the stack's HAProxy is built from: its port, a server for every site the stack may
    have (each at its fixed port), the health path its checks ask, its folder."""
    return {
        "port": settings.port("frontdoor"),
        "servers": {str(role): f"127.0.0.1:{settings.port(str(role))}" for role in Instance},
        "health_path": settings.app.health.path,
        "folder": str(settings.state_dir),
    }


class LocalCutover(pulumi.ComponentResource):
    """The switch to the clone that the program makes itself, at the start of the update that
    first needs it; the clone exists since `clone` (its server is checked before it gets the
    traffic), so the switch waits for nothing of this update."""

    def __init__(
        self,
        name: str,
        args: CutoverArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:Cutover", name, None, opts)
        self.switch = _Dynamic(
            providers.CutoverProvider(),
            f"{name}{CUTOVER_SUFFIX}",
            {
                **_front_door_files(settings),
                "writes": str(args.writes),
                "hold_seconds": args.hold_seconds,
                "drain_within": DRAIN_TIMEOUT_SECONDS,
            },
            pulumi.ResourceOptions(parent=self),
            outputs=("switched_at",),
        )
        self.register_outputs({})


class LocalFrontDoor(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: FrontDoorArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:FrontDoor", name, None, opts)
        # The sites that exist now are the `origins` (known once they are up, so a switch waits).
        origins = pulumi.Output.all(**{str(role): site.url for role, site in args.origins.items()})
        self.proxy = _Dynamic(
            providers.FrontDoorProvider(),
            f"{name}-proxy",
            {
                **_front_door_files(settings),
                "origins": origins,
                "active": str(args.traffic),
                "writes": str(args.writes),
                "hold_seconds": args.hold_seconds,
                "cutover": args.cutover.id if args.cutover is not None else None,
                "log_path": str(log_file(settings.state_dir, "frontdoor")),
                "ports_dir": str(settings.ports_dir),
            },
            pulumi.ResourceOptions(parent=self),
            outputs=("pid", "public_url", "socket_path"),
        )
        self.public_url: pulumi.Output[str] = self.proxy.out("public_url")
        # Locally the primary's own address is its preview address.
        self.preview_url: pulumi.Output[str] = args.origins[Instance.PRIMARY].url
        # HAProxy's runtime API: the driver reads the drain from its counters.
        self.admin_socket: pulumi.Output[str] = self.proxy.out("socket_path")
        self.register_outputs({"public_url": self.public_url})
