"""Local target components on PostgreSQL: the stack's cluster and a database in it, with the
same shape as the SQLite database (connection, name, copy digest, restore point, migration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from infra.components import DatabaseArgs
from infra.local import postgres_providers as providers
from infra.local.components import LocalSettings, _Dynamic, _migration, _restore_point
from zdd import postgres
from zdd.appspec import Placement
from zdd.environment import log_file
from zdd.phases import DatabaseMode, Instance

# The cluster's log name (`zdd logs` reads the stack's logs by component name).
LOG_NAME = "postgresql"


class PostgresCluster(pulumi.ComponentResource):
    """The stack's PostgreSQL server, on the fourth port of its block."""

    def __init__(
        self, name: str, settings: LocalSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("zdd:local:DatabaseServer", name, None, opts)
        self.server = _Dynamic(
            providers.PostgresClusterProvider(),
            f"{name}-cluster",
            {
                "data_dir": str(postgres.data_dir(settings.state_dir)),
                "socket_dir": str(postgres.socket_dir(settings.state_dir)),
                "bin_dir": str(postgres.require_bin_dir()),
                "port": settings.port("database"),
                "log_path": str(log_file(settings.state_dir, LOG_NAME)),
                "ports_dir": str(settings.ports_dir),
            },
            pulumi.ResourceOptions(
                parent=self, additional_secret_outputs=list(providers.SECRET_OUTPUTS)
            ),
            outputs=("pid", *providers.SECRET_OUTPUTS),
        )
        # What a database resource (and the driver, from the stack's outputs) reaches it with.
        self.outputs: pulumi.Output[dict[str, Any]] = pulumi.Output.secret(
            pulumi.Output.all(
                port=self.server.out("port"),
                bin_dir=self.server.out("bin_dir"),
                **{key: self.server.out(key) for key in providers.SECRET_OUTPUTS},
            )
        )
        self.register_outputs({})


class PostgresDatabase(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        settings: LocalSettings,
        cluster: PostgresCluster,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("zdd:local:Database", name, None, opts)
        db_name = postgres.database_name(str(args.role), args.generation)
        files = postgres.files_of(settings.state_dir, db_name)
        self._settings, self._files = settings, files
        self._read_only = args.read_only
        restore_from = (
            str(_restore_point_path(settings, args.restored_from)) if args.restored_from else None
        )
        self.connection: pulumi.Output[str]
        self.database_name: pulumi.Output[str] = pulumi.Output.from_input(db_name)
        self.archive: pulumi.Output[str] | None = None
        self.restore_point_taken: pulumi.Output[dict[str, Any]] | None = None
        if isinstance(args.copy_of, PostgresDatabase):
            self._copy(name, args, args.copy_of, db_name, cluster)
            return
        # Where the site's database is: its name in the stack's cluster.
        self._server_outputs = cluster.outputs
        self._name_in_cluster: pulumi.Output[str] = pulumi.Output.from_input(db_name)
        self.database = _Dynamic(
            providers.PostgresDatabaseProvider(),
            f"{name}-database",
            {
                "server": cluster.outputs,
                "name": db_name,
                "files": str(files),
                "restore_from": restore_from,
                "read_only": args.read_only,
            },
            # A primary database is never dropped by an update: a new generation (a rollback
            # with database) leaves the old one in the cluster.
            pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.role is Instance.PRIMARY,
                depends_on=[cluster],
            ),
            outputs=("copy_seconds", "digest"),
        )
        self.copy_digest: pulumi.Output[str] | None = None
        ready: pulumi.Output[Any] = self.database.id
        self.restore_point: _Dynamic | None = None
        if args.restore_point:
            self.restore_point, self.restore_point_taken = _restore_point(
                self,
                name,
                providers.PostgresRestorePointProvider(),
                {
                    "restore_point": args.restore_point,
                    "server": cluster.outputs,
                    "database": self.database.id,
                    "files": str(files),
                    "backup_path": str(_restore_point_path(settings, args.restore_point)),
                },
                args,
            )
        if args.schema_version:
            placement = self._placement_once(
                self.database.id, args.schema_version, Instance.PRIMARY, DatabaseMode.READ_WRITE
            )
            # Names the migration's lock and owner id, beside the files folder.
            database_path = self.database.id.apply(lambda n: str(settings.state_dir / f"{n}.pg"))
            ready = _migration(
                self, name, settings, args, database_path, placement, self.restore_point
            ).id
        self.connection = ready.apply(lambda _: db_name)
        self.server_outputs = cluster.outputs
        self.register_outputs({"connection": self.connection})

    def _copy(
        self,
        name: str,
        args: DatabaseArgs,
        source: PostgresDatabase,
        db_name: str,
        cluster: PostgresCluster,
    ) -> None:
        """A clone's database: a cluster of its own, a physical copy of the stack's (so the
        database keeps its source's name there), on the fifth port of the block; a read-write
        clone's is writable and archived when it goes."""
        if not self._read_only and not args.keep_baseline:
            raise pulumi.RunError(
                "a writable copy of the stack's cluster keeps its baseline, or the writes the "
                "clone takes could not be reported: deploy with --mode read-only"
            )
        settings = self._settings
        state = settings.state_dir
        self.database = _Dynamic(
            providers.PostgresCloneProvider(),
            f"{name}-cluster",
            {
                "server": cluster.outputs,
                "source": source.connection,
                "source_files": str(source.files),
                "files": str(self._files),
                "data_dir": str(postgres.clone_data_dir(state)),
                "socket_dir": str(postgres.clone_socket_dir(state)),
                "bin_dir": str(postgres.require_bin_dir()),
                "port": settings.port("clone-database"),
                "log_path": str(log_file(state, postgres.CLONE_CLUSTER)),
                "ports_dir": str(settings.ports_dir),
                "front_door_folder": str(state) if args.hold_writes_for_copy else None,
                # Absent on a read-only copy, so a stack made before read-write clones existed
                # on PostgreSQL keeps its copy.
                **(
                    {
                        "writable": True,
                        "archive_dir": str(settings.archive_dir),
                        "archive_stem": f"{args.role}-g{args.generation}",
                        "archive_keep": settings.archive_keep,
                    }
                    if args.keep_baseline
                    else {}
                ),
            },
            pulumi.ResourceOptions(
                parent=self,
                depends_on=[cluster],
                additional_secret_outputs=[*providers.SECRET_OUTPUTS, "clone_server"],
            ),
            outputs=(
                "pid",
                "copy_seconds",
                "digest",
                "clone_server",
                "archive_path",
                *providers.SECRET_OUTPUTS,
            ),
        )
        self.copy_digest = self.database.out("digest")
        self.archive = self.database.out("archive_path") if args.keep_baseline else None
        clone_server: pulumi.Output[dict[str, Any]] = pulumi.Output.secret(
            self.database.out("clone_server")
        )
        self._server_outputs = clone_server
        self._name_in_cluster = clone_server.apply(lambda server: str(server["database"]))
        self.restore_point = None
        self.connection = self.database.id.apply(lambda _: db_name)
        # The driver reads the copy's digest through it (its port, the database's name there).
        self.server_outputs = clone_server
        self.register_outputs({"connection": self.connection})

    @property
    def files(self) -> Path:
        return self._files

    def placement(
        self, version: str, instance: Instance, mode: DatabaseMode
    ) -> pulumi.Output[Placement]:
        """The values an app spec's placeholders take for one instance on this database, once
        the database is ready for it (migrated: a site on the new version never starts on the
        old schema): a read-only clone's URL names the role that may only read."""
        return self._placement_once(self.connection, version, instance, mode)

    def _placement_once(
        self, ready: pulumi.Output[Any], version: str, instance: Instance, mode: DatabaseMode
    ) -> pulumi.Output[Placement]:
        settings = self._settings
        return pulumi.Output.all(ready, self._name_in_cluster, self._server_outputs).apply(
            lambda values: Placement(
                version=version,
                release=settings.app.release(version),
                instance=str(instance),
                database_mode=mode,
                database=str(values[1]),
                files=str(self._files),
                port=settings.port(str(instance)),
                server_url=postgres.server_from_outputs(values[2]).url(
                    str(values[1]), read_only=self._read_only
                ),
            )
        )


def _restore_point_path(settings: LocalSettings, restore_point: str) -> Path:
    return settings.state_dir / postgres.restore_point_folder_name(restore_point)
