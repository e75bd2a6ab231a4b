"""Local target components: a SQLite database, a site process, a front door process."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from infra.components import DatabaseArgs, FrontDoorArgs, SiteArgs
from infra.local import providers
from sampleapp.versions import resolve
from zdd.phases import Instance


@dataclass(frozen=True)
class LocalSettings:
    state_dir: Path
    base_port: int
    # The interpreter that runs the site and the front door: the project's virtual environment,
    # named the same way however the program was started (so it never shows up as a change).
    python: str = str(Path(sys.prefix) / "bin" / "python")

    def port(self, role: str) -> int:
        return self.base_port + {"frontdoor": 0, "primary": 1, "clone": 2}[role]


def restore_point_path(settings: LocalSettings, restore_point: str) -> Path:
    return settings.state_dir / f"restore-{restore_point.replace(':', '')}.sqlite"


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


class LocalDatabase(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        path = settings.state_dir / f"{args.role}-g{args.generation}.sqlite"
        source: pulumi.Input[str] | None = None
        if args.copy_of is not None:
            source = args.copy_of.connection
        elif args.restored_from:
            source = str(restore_point_path(settings, args.restored_from))
        self.file = _Dynamic(
            providers.SqliteDatabaseProvider(),
            f"{name}-file",
            {"path": str(path), "source": source, "keep_baseline": args.keep_baseline},
            # A primary database file is never deleted by an update: a new generation (a
            # rollback with database) leaves the old one on disk as an archive.
            pulumi.ResourceOptions(parent=self, retain_on_delete=args.role is Instance.PRIMARY),
            outputs=("size_bytes", "copy_seconds"),
        )
        ready: pulumi.Output[Any] = self.file.id
        self.restore_point: _Dynamic | None = None
        if args.restore_point:
            self.restore_point = _Dynamic(
                providers.RestorePointProvider(),
                f"{name}-restore-point",
                {
                    "restore_point": args.restore_point,
                    "database_path": self.file.id.apply(lambda _: str(path)),
                    "backup_path": str(restore_point_path(settings, args.restore_point)),
                },
                child,
                outputs=("taken_at", "digest"),
            )
        if args.schema_version:
            # The migration waits for the restore point: no change before it is recorded.
            after = [self.restore_point] if self.restore_point else []
            migration = _Dynamic(
                providers.MigrationProvider(),
                f"{name}-migration",
                {
                    "database_path": self.file.id.apply(lambda _: str(path)),
                    "version": args.schema_version,
                    # Versions that share a schema share a revision: no migration between them.
                    "revision": resolve(args.schema_version).schema_revision,
                    "generation": args.generation,
                    "python": settings.python,
                },
                pulumi.ResourceOptions(parent=self, depends_on=after),
            )
            ready = migration.id
        self.connection: pulumi.Output[str] = ready.apply(lambda _: str(path))
        self.database_name: pulumi.Output[str] = pulumi.Output.from_input(path.name)
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
        spec = args.spec
        self.process = _Dynamic(
            providers.WebAppProvider(),
            f"{name}-process",
            {
                "instance": str(spec.instance),
                "version": spec.version,
                "database_mode": str(spec.database_mode),
                "database_path": args.database.connection,
                "port": settings.port(str(spec.instance)),
                "python": settings.python,
                "log_path": str(settings.state_dir / f"{spec.instance}.log"),
            },
            pulumi.ResourceOptions(parent=self),
            outputs=("pid", "url"),
        )
        self.url: pulumi.Output[str] = self.process.out("url")
        self.register_outputs({"url": self.url})


class LocalFrontDoor(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: FrontDoorArgs,
        settings: LocalSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:FrontDoor", name, None, opts)
        origins = pulumi.Output.all(**{str(role): site.url for role, site in args.origins.items()})
        self.proxy = _Dynamic(
            providers.FrontDoorProvider(),
            f"{name}-proxy",
            {
                "port": settings.port("frontdoor"),
                "origins": origins,
                "active": str(args.traffic),
                "python": settings.python,
                "state_path": str(settings.state_dir / "frontdoor.json"),
                "log_path": str(settings.state_dir / "frontdoor.log"),
            },
            pulumi.ResourceOptions(parent=self, additional_secret_outputs=["admin_token"]),
            outputs=("pid", "public_url", "admin_token"),
        )
        self.public_url: pulumi.Output[str] = self.proxy.out("public_url")
        # Locally the primary's own address is its preview address.
        self.preview_url: pulumi.Output[str] = args.origins[Instance.PRIMARY].url
        self.admin_token: pulumi.Output[str] = self.proxy.out("admin_token")
        self.register_outputs({"public_url": self.public_url})
