"""The Azure database: the primary's Azure SQL database (one per generation) or the clone's copy.

It also runs what the app spec asks of the primary database on the machine that runs the
update: the restore point's proof (`infra.azure.restore_point`) and the migration, retried
while a new firewall rule applies.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import pulumi
from pulumi_azure_native import sql, web
from pulumi_command import local

from infra.azure.clone_access import AsAdministrator, CloneAccess
from infra.azure.foundation import AzureFoundation
from infra.azure.restore_point import RestorePoint
from infra.azure.settings import AzureSettings
from infra.components import DatabaseArgs
from zdd.appspec import fill
from zdd.phases import RESTORE_POINT_SUFFIX, DatabaseMode, Instance

# The migration login: the name and the password (a secret of the stack config).
Login = tuple[str, pulumi.Output[str]]


@dataclass(frozen=True)
class Reached:
    """How an app spec command reaches the database: the name its placeholders and
    `ZDD_DATABASE_NAME` give, the connection (`ZDD_DATABASE_CONNECTION`) and the engine's own
    variables."""

    database_name: pulumi.Output[str]
    connection: pulumi.Output[str]
    variables: dict[str, pulumi.Input[str]] = field(default_factory=dict)


def restore_point_in_time(restore_point: str) -> str:
    """The recorded restore point as the ISO-8601 UTC timestamp Azure SQL restores to."""
    try:
        moment = datetime.fromisoformat(restore_point)
    except ValueError:
        raise pulumi.RunError(
            f"restore point {restore_point!r} is not a point in time: on Azure it is an "
            "ISO-8601 timestamp such as 2025-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Generation:
    """One generation of the primary (an Azure SQL database, a PostgreSQL server): the
    current one, or the one before it, kept while the deployment that restored the current
    one goes on."""

    number: int
    # The restore point a generation above 1 was restored at (from the generation before).
    restored_from: str | None
    kept: bool
    # Declared first (the generation before): this one is made after it.
    after: pulumi.Resource | None = None

    @property
    def point_in_time(self) -> str | None:
        return restore_point_in_time(self.restored_from) if self.restored_from else None

    def options(
        self,
        parent: pulumi.Resource,
        settings: AzureSettings,
        how_made: list[str],
        ignored: list[str] | None = None,
    ) -> pulumi.ResourceOptions:
        """Protected while current; a kept generation exists already, so how it was made
        (`how_made`: the inputs of a create or a restore) is history, never a reason to replace
        it; no generation is replaced for a change of `ignored`. A restore may take as long as
        a copy."""
        return pulumi.ResourceOptions(
            parent=parent,
            protect=not self.kept,
            retain_on_delete=self.kept,
            ignore_changes=[*how_made, *(ignored or [])] if self.kept else ignored,
            depends_on=[self.after] if self.after else None,
            custom_timeouts=copy_timeouts(settings) if self.number > 1 else None,
        )


class AzureDatabaseBase(pulumi.ComponentResource):
    """What the Azure SQL and the PostgreSQL database share: which generations a primary
    declares, the name of a clone's copy, the app spec's commands run on the machine that runs
    the update (the restore point's proof, then the migration) and the site's connection,
    which waits for them."""

    # The component's Pulumi type.
    kind: ClassVar[str]
    # Whom the migration and the digest never run as (named when their login is missing).
    administrator: ClassVar[str]
    database_name: pulumi.Output[str]
    database_id: pulumi.Output[str]
    connection: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: DatabaseArgs,
        foundation: AzureFoundation,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.kind, name, None, opts)
        self._foundation = foundation
        self.archive: pulumi.Output[str] | None = None
        self.copy_digest: pulumi.Output[str] | None = None
        self.migration: local.Command | None = None
        self.restore_point: RestorePoint | None = None
        self.restore_point_taken: pulumi.Output[dict[str, Any]] | None = None
        self._declare(name, args)

    def _declare(self, name: str, args: DatabaseArgs) -> None:
        """The database of `args`, what runs on it, and the site's connection to it."""
        raise NotImplementedError

    def _login(self, user: pulumi.Input[str], password: pulumi.Input[str]) -> pulumi.Output[str]:
        """How the site connects to this database as `user`."""
        raise NotImplementedError

    def _connect_site(self, access: AsAdministrator | None, after: list[pulumi.Resource]) -> None:
        """The site connects once every resource of `after` is done: as the clone's own login
        when its copy has one (`access`), else as the administrator."""
        settings = self._foundation.settings
        if access is not None:
            site_login = self._login(access.user, access.password)
        else:
            site_login = self._login(settings.sql_admin_login, settings.sql_admin_password)
        self.connection = self._connection_after(site_login, after)
        self.register_outputs(
            {"database_name": self.database_name, "database_id": self.database_id}
        )

    @staticmethod
    def _restores_previous(args: DatabaseArgs) -> bool:
        """Whether this update declares the primary's generation before this one too: while the
        deployment that restored it goes on (its restore point is `restored_from`)."""
        if args.generation > 1 and args.restored_from is None:
            raise pulumi.RunError(
                f"database generation {args.generation} needs the restore point it was "
                "restored from (zdd:restoredFrom)"
            )
        return args.generation > 1 and args.restore_point == args.restored_from

    def _copy_name(self, args: DatabaseArgs) -> str:
        """The name of a clone's copy. A read-write clone's copy takes writes the primary never
        sees: it is kept (retained on delete, under its deployment's name) as their archive."""
        settings = self._foundation.settings
        if args.rehearsal:
            return f"{settings.database_name}-rehearsal"
        if args.keep_baseline and settings.deployment_id:
            return f"{settings.database_name}-clone-{settings.deployment_id}"
        return f"{settings.database_name}-clone"

    # -- what runs on the machine that runs the update -------------------------------------

    def _run_app_commands(
        self, name: str, args: DatabaseArgs, before_changes: list[pulumi.Resource]
    ) -> None:
        """The restore point's proof and the migration the app spec asks of the primary (and of
        a rehearsal's copy, migrated like the primary to the release rehearsed, no restore point
        taken), each added to `before_changes` once declared."""
        settings = self._foundation.settings
        app = settings.app
        schema = args.schema_version
        migrates = not args.existing and (args.role is Instance.PRIMARY or args.rehearsal)
        if not (migrates and schema and (app.migrate or app.digest)):
            return
        login, password = settings.migration_login, settings.migration_password
        if login is None or password is None:
            raise pulumi.RunError(
                "the app spec's `migrate` and `digest` need zdd:migrationLogin and "
                "zdd:migrationPassword (secret): they never run as the "
                f"{self.administrator} (docs/azure.md)"
            )
        if args.role is Instance.PRIMARY and args.restore_point and app.digest:
            point = self._restore_point(name, args, schema, (login, password), before_changes)
            self.restore_point = point
            before_changes.append(point)
            self.restore_point_taken = pulumi.Output.all(
                restore_point=point.restore_point, taken_at=point.taken_at, digest=point.digest
            )
        if app.migrate:
            argv, environment = self._command_inputs(
                app.migrate, args, schema, (login, password), restore_point=False
            )
            self.migration = local.Command(
                f"{name}-migration",
                create=argv.apply(
                    lambda argv: retrying(
                        shlex.join(argv),
                        settings.migration_attempts,
                        settings.migration_retry_seconds,
                    )
                ),
                environment=environment,
                # Runs again for a new schema version or a new (restored) generation only.
                triggers=[schema, args.generation],
                # It connects from the machine that runs `pulumi up`: through its firewall
                # rule, once the restore point is recorded.
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(before_changes)),
            )
            before_changes.append(self.migration)

    def _restore_point(
        self,
        name: str,
        args: DatabaseArgs,
        version: str,
        login: Login,
        after: list[pulumi.Resource],
    ) -> RestorePoint:
        """The proof of the restore point (rule 8 of docs/design.md): the point in time the
        driver took on Azure's clock after the drain, and the content digest the spec's `digest`
        reads then."""
        settings = self._foundation.settings
        assert args.restore_point is not None
        restore_point_in_time(args.restore_point)  # a point in time, or one clear line
        argv, environment = self._command_inputs(
            settings.app.digest, args, version, login, restore_point=True
        )
        return RestorePoint(
            f"{name}{RESTORE_POINT_SUFFIX}",
            restore_point=args.restore_point,
            database=self._restore_point_taken_on(),
            argv=argv,
            environment=environment,
            attempts=settings.migration_attempts,
            pause_seconds=settings.migration_retry_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )

    def _restore_point_taken_on(self) -> pulumi.Output[str]:
        """What the restore point records as its database (a restored generation is not it)."""
        raise NotImplementedError

    def _command_inputs(
        self,
        argv: tuple[str, ...],
        args: DatabaseArgs,
        version: str,
        login: Login,
        *,
        restore_point: bool,
    ) -> tuple[pulumi.Output[list[str]], dict[str, pulumi.Input[str]]]:
        """An app spec command (the digest of the restore point, or the migration), its
        placeholders filled, and what it gets on the machine that runs the update: the app
        spec's `env`, then the database reached with the migration login."""
        reached = self._reached(login, restore_point=restore_point)
        known = self._placeholders(version, reached.database_name)
        environment: dict[str, pulumi.Input[str]] = {
            key: known.apply(partial(fill, value))
            for key, value in self._foundation.settings.app.env.items()
        }
        environment.update(
            {
                "ZDD_DATABASE_CONNECTION": reached.connection,
                "ZDD_DATABASE_NAME": reached.database_name,
                "ZDD_SCHEMA_VERSION": version,
                "ZDD_DATABASE_GENERATION": str(args.generation),
                **reached.variables,
            }
        )
        filled = known.apply(lambda known: [fill(arg, known) for arg in argv])
        return filled, environment

    def _reached(self, login: Login, *, restore_point: bool) -> Reached:
        """How a command run as `login` reaches the database (`restore_point`: the command is the
        restore point's digest, not the migration)."""
        raise NotImplementedError

    def _placeholders(
        self, version: str, database_name: pulumi.Output[str]
    ) -> pulumi.Output[dict[str, str]]:
        """The app spec's placeholders for a command run on the primary database."""
        settings = self._foundation.settings
        return database_name.apply(
            partial(settings.placeholders, version, Instance.PRIMARY, DatabaseMode.READ_WRITE)
        )

    @staticmethod
    def _connection_after(
        site_login: pulumi.Output[str], after: list[pulumi.Resource]
    ) -> pulumi.Output[str]:
        """The site's connection, known only once every resource of `after` is done."""
        connection = pulumi.Output.all(site_login, *(resource.urn for resource in after)).apply(
            lambda values: str(values[0])
        )
        return pulumi.Output.secret(connection)


class AzureDatabase(AzureDatabaseBase):
    """The primary database (one Azure SQL database per generation) or the clone's copy.

    - generation 1: a new database, protected, with short-term backup retention;
    - generation N > 1 (rollback with database): a point-in-time restore of generation N-1 at
      `restored_from`, protected. Its inputs depend on nothing but N and `restored_from`, so it
      is the same database in every later phase and deployment. While the deployment that
      restored it goes on (its restore point is `restored_from`), generation N-1 stays declared,
      unprotected but retained on delete: when the deployment ends Pulumi forgets it and never
      drops it;
    - clone: `createMode: Copy` of the primary, never migrated; a rehearsal's copy
      (`<databaseName>-rehearsal`) is migrated to the release rehearsed;
    - existing: an earlier generation that a compatible clone still serves, only read.
    """

    kind = "zdd:azure:Database"
    connection_type = web.ConnectionStringType.SQL_AZURE
    administrator = "SQL administrator"

    def _declare(self, name: str, args: DatabaseArgs) -> None:
        foundation = self._foundation
        self.previous: sql.Database | None = None
        if args.existing:
            self._point_at_existing(args.generation)
            return
        if args.role is Instance.PRIMARY:
            self.database = self._primary(name, args)
        else:
            self.database = self._copy(name, args)
        # Who the site connects as: the clone as its own user (below), never the administrator.
        self.access: CloneAccess | None = None
        if args.role is Instance.CLONE:
            self.access = self._clone_access(name, read_only=args.read_only)
        self.database_name = self.database.name
        self.database_id = self.database.id
        self.archive = self.database.name if args.keep_baseline else None
        # Nothing changes the primary database (its migration) nor the primary site (which
        # connects through `connection`) before these.
        before_changes: list[pulumi.Resource] = [self.database, *foundation.firewall_rules]
        self._run_app_commands(name, args, before_changes)
        # The site connects once the restore point and the migration are done, or, for the
        # clone, once its copy has its own user (and is read-only).
        if self.access is not None:
            before_changes.append(self.access)
        self._connect_site(self.access, before_changes[1:])

    def _primary(self, name: str, args: DatabaseArgs) -> sql.Database:
        """This generation of the primary database, after the one before where it is kept."""
        if self._restores_previous(args):
            self.previous = self._generation(name, Generation(args.generation - 1, None, kept=True))
        current = Generation(args.generation, args.restored_from, kept=False, after=self.previous)
        return self._generation(name, current)

    def _copy(self, name: str, args: DatabaseArgs) -> sql.Database:
        """The clone's copy of the primary database (`createMode: Copy`)."""
        settings = self._foundation.settings
        if args.schema_version is not None and not args.rehearsal:
            raise pulumi.RunError("a clone's database is a copy: it is never migrated")
        source = args.copy_of
        if not isinstance(source, AzureDatabase):
            raise pulumi.RunError("an Azure clone database must copy an Azure database")
        return sql.Database(
            f"{name}-copy",
            database_name=self._copy_name(args),
            server_name=self._foundation.sql.name,
            resource_group_name=self._foundation.resource_group_name,
            location=settings.location,
            sku=sql.SkuArgs(name=settings.database_sku),
            create_mode=sql.CreateMode.COPY,
            source_database_id=source.database_id,
            tags={"zdd-role": str(Instance.CLONE)},
            # Copied once, when the clone is created: a later change of the primary's
            # database (a rollback with database) never replaces the copy under the clone.
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["sourceDatabaseId"],
                retain_on_delete=args.keep_baseline,
                custom_timeouts=copy_timeouts(settings),
            ),
        )

    def _point_at_existing(self, generation: int) -> None:
        """An earlier generation a compatible clone still serves: declared (kept) by the
        update that restored the primary, only named here, so the clone never restarts."""
        foundation = self._foundation
        settings = foundation.settings
        name = f"{settings.database_name}-g{generation}"
        self.access = None
        self.database_name = pulumi.Output.from_input(name)
        self.database_id = pulumi.Output.concat(foundation.sql.id, f"/databases/{name}")
        self.connection = pulumi.Output.secret(
            self._connection_string(settings.sql_admin_login, settings.sql_admin_password)
        )
        self.register_outputs({"database_name": self.database_name})

    def _generation(self, name: str, made: Generation) -> sql.Database:
        generation = made.number
        foundation = self._foundation
        settings = foundation.settings
        source_id: pulumi.Output[str] | None = None
        point_in_time: str | None = None
        if generation == 1:
            create_mode = sql.CreateMode.DEFAULT
        else:
            create_mode = sql.CreateMode.POINT_IN_TIME_RESTORE
            # The previous generation's id, known without declaring it (it may be long gone).
            source_id = pulumi.Output.concat(
                foundation.sql.id,
                f"/databases/{settings.database_name}-g{generation - 1}",
            )
            point_in_time = made.point_in_time
        how_made = ["createMode", "sourceDatabaseId", "restorePointInTime"]
        options = made.options(self, settings, how_made)
        database = sql.Database(
            f"{name}-g{generation}",
            database_name=f"{settings.database_name}-g{generation}",
            server_name=foundation.sql.name,
            resource_group_name=foundation.resource_group_name,
            location=settings.location,
            sku=sql.SkuArgs(name=settings.database_sku),
            create_mode=create_mode,
            source_database_id=source_id,
            restore_point_in_time=point_in_time,
            tags={"zdd-role": str(Instance.PRIMARY), "zdd-generation": str(generation)},
            opts=options,
        )
        sql.BackupShortTermRetentionPolicy(
            f"{name}-g{generation}-retention",
            policy_name="default",
            database_name=database.name,
            server_name=foundation.sql.name,
            resource_group_name=foundation.resource_group_name,
            retention_days=settings.backup_retention_days,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=made.kept),
        )
        return database

    def _restore_point_taken_on(self) -> pulumi.Output[str]:
        return (self.previous or self.database).name

    def _reached(self, login: Login, *, restore_point: bool) -> Reached:
        # The digest reads the database the point was taken on: a restored generation is not it.
        database = (self.previous or self.database) if restore_point else self.database
        return Reached(database.name, self._connection_string(*login, database))

    def _clone_access(self, name: str, *, read_only: bool) -> CloneAccess:
        """The copy's own user (and its read-only state), given as the administrator from the
        machine that runs the update, through its firewall rule."""
        foundation = self._foundation
        settings = foundation.settings
        return CloneAccess(
            f"{name}-access",
            server=foundation.sql.fully_qualified_domain_name,
            database=self.database.name,
            read_only=read_only,
            settings=settings,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.database, *foundation.firewall_rules]
            ),
        )

    def _login(self, user: pulumi.Input[str], password: pulumi.Input[str]) -> pulumi.Output[str]:
        return self._connection_string(user, password)

    def _connection_string(
        self,
        login: pulumi.Input[str],
        password: pulumi.Input[str],
        database: sql.Database | None = None,
    ) -> pulumi.Output[str]:
        foundation = self._foundation

        def render(values: list[str]) -> str:
            host, database, user, secret = values
            return (
                f"Server=tcp:{host},1433;Initial Catalog={database};"
                f"User ID={user};Password={secret};"
                "Encrypt=True;TrustServerCertificate=False;Connection Timeout=30;"
            )

        return pulumi.Output.secret(
            pulumi.Output.all(
                foundation.sql.fully_qualified_domain_name,
                database.name if database else self.database_name,
                login,
                password,
            ).apply(render)
        )


def copy_timeouts(settings: AzureSettings) -> pulumi.CustomTimeouts:
    """A copy or a point-in-time restore takes as long as the data (Azure: "most database
    restores finish in less than 12 hours"); Pulumi's default would give up after 2."""
    return pulumi.CustomTimeouts(create=settings.database_create_timeout)


def retrying(command: str, attempts: int, pause_seconds: int) -> str:
    """`command` run up to `attempts` times, `pause_seconds` apart (a new firewall rule takes
    minutes to apply). The migration must be safe to run again: Alembic revisions on SQL
    Server are transactional, and one that succeeded is not run a second time."""
    return (
        f"for attempt in $(seq 1 {attempts}); do sh -c {shlex.quote(command)} && exit 0; "
        f'[ "$attempt" -lt {attempts} ] && sleep {pause_seconds}; done; exit 1'
    )
