"""The clone's copy of an Azure Database for PostgreSQL database, and the clone's own way into it.

The copy is a database of the primary's own server, filled from a `pg_dump` of the primary
(one snapshot: consistent while the primary keeps writing, and never blocking it) restored
with `pg_restore`, both run on the machine that runs the update through the operator's
firewall rule. Objects are restored as the migration login's (`--role`), so that a migration
run on the copy (a rehearsal) finds them as it finds the primary's.

Then the clone gets a role of its own, `zdd_clone`, with a new password (a secret output): it
may connect to the copy only, read every table there and, read-write (a rehearsal, or a clone
whose data loss was acknowledged), write rows; a read-only clone's role and database both get
`default_transaction_read_only = on`, and what the server says afterwards is read back. Rule 9
of docs/design.md at the database: a read-only clone cannot write even where the edge lets a
write through. The clone's web app connects as that role and is created only after this.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider

from infra.azure.clone_access import (
    AsAdministrator,
    as_administrator,
    new_password,
    until_reachable,
)
from infra.replacing import replaced_when_changed

# The engine's dynamic provider host loads this module to run the provider: the settings (and
# the Azure SDK they load) are only the program's business.
if TYPE_CHECKING:
    from infra.azure.settings import AzureSettings

CLONE_ROLE = "zdd_clone"
WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")

Connect = Callable[..., Any]
# Runs a dump piped into a restore: (dump argv, restore argv, environment) -> (exit, stderr).
Pipe = Callable[[Sequence[str], Sequence[str], dict[str, str]], tuple[int, str]]


class PostgresCopyFailed(Exception):
    """The copy could not be made or given its access; nothing of the clone runs yet."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def conninfo(host: str, database: str, user: str) -> str:
    """A libpq connection string (the password comes from PGPASSWORD, never the argv)."""
    return f"host={host} port=5432 dbname={database} user={user} sslmode=require"


def dump_and_restore(
    host: str, source: str, destination: str, admin: str, owner: str | None
) -> tuple[list[str], list[str]]:
    """`pg_dump` of `source` (one snapshot) and the `pg_restore` into `destination`. A retry
    starts again from scratch (`--clean --if-exists`); objects are made as `owner`'s."""
    dump = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges"]
    dump.append(f"--dbname={conninfo(host, source, admin)}")
    restore = ["pg_restore", "--no-owner", "--no-privileges", "--clean", "--if-exists"]
    restore += ["--exit-on-error", "--single-transaction"]
    if owner:
        restore.append(f"--role={owner}")
    restore.append(f"--dbname={conninfo(host, destination, admin)}")
    return dump, restore


def access_statements(
    database: str,
    password: str,
    schemas: Sequence[str],
    *,
    read_only: bool,
    owner: str | None,
    role_exists: bool,
) -> list[str]:
    """The SQL that gives the clone its role in the copy (run there, as the administrator)."""
    role = _ident(CLONE_ROLE)
    verb = "ALTER" if role_exists else "CREATE"
    statements = [
        f"{verb} ROLE {role} WITH LOGIN NOINHERIT PASSWORD {_literal(password)}",
        # Only the clone's own role may connect to the copy, and nobody else's role through it.
        f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {_ident(database)} TO {role}",
    ]
    if owner:
        # The migration login owns what was restored: a rehearsal's migration connects as it.
        statements.append(
            f"GRANT CONNECT, TEMPORARY ON DATABASE {_ident(database)} TO {_ident(owner)}"
        )
    for schema in schemas:
        statements.append(f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {role}")
        if read_only:
            statements.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA {_ident(schema)} TO {role}")
            continue
        statements += [
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
            f"{_ident(schema)} TO {role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {_ident(schema)} TO {role}",
        ]
        if owner:
            # Tables a rehearsal's migration adds are the clone's to use too.
            statements += [
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(owner)} IN SCHEMA {_ident(schema)} "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(owner)} IN SCHEMA {_ident(schema)} "
                f"GRANT USAGE, SELECT ON SEQUENCES TO {role}",
            ]
    setting = "on" if read_only else "off"
    statements += [
        f"ALTER ROLE {role} SET default_transaction_read_only = {setting}",
        f"ALTER DATABASE {_ident(database)} SET default_transaction_read_only = {setting}",
    ]
    return statements


def _pipe(
    dump: Sequence[str], restore: Sequence[str], environment: dict[str, str]
) -> tuple[int, str]:
    env = {**os.environ, **environment}
    with subprocess.Popen(list(dump), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as d:
        done = subprocess.run(
            list(restore), stdin=d.stdout, capture_output=True, text=True, env=env, check=False
        )
        dump_error = d.stderr.read().decode(errors="replace") if d.stderr else ""
        d.wait()
    code = d.returncode or done.returncode
    return code, (dump_error + done.stderr).strip()


def _psycopg_connect(conninfo_text: str, **options: Any) -> Any:
    """psycopg's connect, imported when a copy is first made."""
    return importlib.import_module("psycopg").connect(conninfo_text, **options)


def _what_the_server_says(admin: Any, destination: str) -> tuple[int, str]:
    """The clone's role's write privileges and the copy's own settings, read back."""
    writable = admin.execute(
        "SELECT count(*) FROM information_schema.table_privileges "
        "WHERE grantee = %s AND privilege_type = ANY(%s)",
        (CLONE_ROLE, list(WRITES)),
    ).fetchone()[0]
    settings = admin.execute(
        "SELECT coalesce(array_to_string(s.setconfig, ','), '') FROM pg_db_role_setting s "
        "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
        (destination,),
    ).fetchone()
    return int(writable), str(settings[0]) if settings else ""


def copy_database(
    *,
    host: str,
    source: str,
    destination: str,
    admin_login: str,
    admin_password: str,
    owner: str | None,
    read_only: bool,
    attempts: int,
    pause_seconds: float,
    pipe: Pipe = _pipe,
    connect: Connect = _psycopg_connect,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Copy `source` into `destination` and give the clone its role; return what the server
    says now. Retried while the operator's new firewall rule applies."""

    def once() -> dict[str, Any]:
        admin = connect(
            conninfo(host, destination, admin_login), password=admin_password, autocommit=True
        )
        try:
            if owner:
                # The restore runs as the migration login: it must be able to create the objects.
                admin.execute(f"GRANT ALL ON SCHEMA public TO {_ident(owner)}")
            dump, restore = dump_and_restore(host, source, destination, admin_login, owner)
            code, errors = pipe(dump, restore, {"PGPASSWORD": admin_password})
            if code != 0:
                raise RuntimeError(f"pg_dump | pg_restore exit {code}: {errors[-300:]}")
            schemas = [
                str(row[0])
                for row in admin.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                    "AND nspname <> 'information_schema'"
                ).fetchall()
            ]
            exists = admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (CLONE_ROLE,)
            ).fetchone()
            password = new_password()
            for statement in access_statements(
                destination, password, schemas, read_only=read_only, owner=owner,
                role_exists=exists is not None,
            ):  # fmt: skip
                admin.execute(statement)
            writable, database_settings = _what_the_server_says(admin, destination)
        finally:
            admin.close()
        if read_only and (writable or "default_transaction_read_only=on" not in database_settings):
            raise PostgresCopyFailed(
                f"the clone's database {destination} has settings {database_settings!r} and its "
                f"role {writable} write privilege(s) after being made read-only; the clone's web "
                "app was not created"
            )
        return {
            "user": CLONE_ROLE,
            "password": password,
            "write_privileges": writable,
            "database_settings": database_settings,
        }

    return until_reachable(
        once,
        attempts=attempts,
        pause_seconds=pause_seconds,
        sleep=sleep,
        fatal=PostgresCopyFailed,  # a copy that can still write is not retried
        failure=f"the clone's database {destination} could not be copied from {source}",
    )


class PostgresCopyProvider(ResourceProvider):
    """Copies once; a new copy (another database, another mode) is made again."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = copy_database(
            host=props["host"],
            source=props["source"],
            destination=props["destination"],
            owner=props.get("owner") or None,
            read_only=bool(props["read_only"]),
            **as_administrator(props),
        )
        return CreateResult(
            id_=f"{props['host']}/{props['destination']}/{CLONE_ROLE}", outs={**props, **outs}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return replaced_when_changed(olds, news, ("host", "source", "destination", "read_only"))


class PostgresCopy(AsAdministrator):
    """The PostgreSQL copy and the clone's role in it; `write_privileges` and
    `database_settings`: what the server said once it was given."""

    host: pulumi.Output[str]
    destination: pulumi.Output[str]
    write_privileges: pulumi.Output[int]
    database_settings: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        host: pulumi.Input[str],
        source: pulumi.Input[str],
        destination: pulumi.Input[str],
        owner: str | None,
        read_only: bool,
        settings: AzureSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {
            "host": host,
            "source": source,
            "destination": destination,
            "owner": owner,
            "read_only": read_only,
        }
        read_back = ["write_privileges", "database_settings"]
        super().__init__(PostgresCopyProvider(), name, inputs, settings, read_back, opts)
