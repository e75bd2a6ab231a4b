"""The clone's own way into its database copy: a contained user with the rights its mode allows,
and, for a read-only clone, the copy itself made read-only. Rule 9 of docs/design.md at the
database: a read-only clone cannot write even where the edge lets a write through.

A copy carries the primary's users, so the clone would otherwise connect as someone who may
write (before this, the SQL administrator). This resource runs once per copy, on the machine
that runs the update, connected as the administrator: it creates the user `zdd_clone` with a
password of its own (kept as a secret output), grants `db_datareader` (a read-write clone also
`db_datawriter`), sets a read-only copy `READ_ONLY`, and reads back what the database now says.
The clone's web app connects as that user and is created only after this succeeded.
"""

from __future__ import annotations

import importlib
import secrets
import string
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from infra.replacing import replaced_when_changed

# The engine's dynamic provider host loads this module to run the provider: the settings (and
# the Azure SDK they load) are only the program's business.
if TYPE_CHECKING:
    from infra.azure.settings import AzureSettings

T = TypeVar("T")

CLONE_USER = "zdd_clone"
READER_ROLES = ("db_datareader",)
WRITER_ROLES = ("db_datareader", "db_datawriter")
# Roles that could change the copy: a read-only clone's user is in none of them.
WRITING_ROLES = ("db_owner", "db_ddladmin", "db_datawriter")
# None of these means anything in a T-SQL string literal or a connection string.
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.!#"

Connect = Callable[..., Any]


class CloneAccessFailed(Exception):
    """The clone's database could not be given its access; nothing of the clone runs yet."""


def new_password(length: int = 32) -> str:
    """A password Azure SQL accepts: every character class, no quote."""
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "-_.!#")
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if all(any(c in group for c in password) for group in classes):
            return password


def access_statements(user: str, password: str, *, read_only: bool) -> list[str]:
    """The T-SQL that gives the clone its user and, read-only, makes the copy read-only. Run
    in the copy, in this order, with autocommit (ALTER DATABASE is no transaction's part)."""
    if any(c not in _PASSWORD_ALPHABET for c in password):
        raise ValueError("the clone's password has a character T-SQL would read")
    statements = [
        # A retried create finds the user of its first attempt: it starts again from scratch.
        f"IF USER_ID(N'{user}') IS NOT NULL DROP USER [{user}]",
        f"CREATE USER [{user}] WITH PASSWORD = N'{password}'",
        *(
            f"ALTER ROLE [{role}] ADD MEMBER [{user}]"
            for role in (READER_ROLES if read_only else WRITER_ROLES)
        ),
    ]
    if read_only:
        # Nobody is connected to the copy yet but this session: nothing to roll back.
        statements.append("ALTER DATABASE CURRENT SET READ_ONLY WITH ROLLBACK IMMEDIATE")
    return statements


def _pymssql_connect(**options: Any) -> Any:
    """pymssql's connect, imported when a copy is first given its access."""
    return importlib.import_module("pymssql").connect(**options)


def until_reachable(
    once: Callable[[], T],
    *,
    attempts: int,
    pause_seconds: float,
    sleep: Callable[[float], None],
    fatal: type[Exception],
    failure: str,
) -> T:
    """`once()`, tried up to `attempts` times `pause_seconds` apart while the operator's new
    firewall rule applies (a connection refused, a timeout); a `fatal` error is not retried.
    After the last attempt, a `fatal` error says `failure` and the last attempt's complaint."""
    complaint = "not tried"
    for attempt in range(1, attempts + 1):
        try:
            return once()
        except fatal:
            raise
        except Exception as exc:  # the database driver's own errors
            complaint = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            if attempt < attempts:
                sleep(pause_seconds)
    raise fatal(
        f"{failure} after {attempts} attempt(s) ({complaint}); the clone's web app was not created"
    )


def grant_clone_access(
    *,
    server: str,
    database: str,
    admin_login: str,
    admin_password: str,
    read_only: bool,
    attempts: int,
    pause_seconds: float,
    connect: Connect = _pymssql_connect,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Give the copy its user (and its read-only state); return what the database says now.
    Retried while the operator's new firewall rule applies."""
    return until_reachable(
        lambda: _grant_once(server, database, admin_login, admin_password, read_only, connect),
        attempts=attempts,
        pause_seconds=pause_seconds,
        sleep=sleep,
        fatal=CloneAccessFailed,
        failure=f"the clone's database {database} could not be given its read-only access",
    )


def _grant_once(
    server: str,
    database: str,
    admin_login: str,
    admin_password: str,
    read_only: bool,
    connect: Connect,
) -> dict[str, Any]:
    connection = connect(
        server=server,
        port=1433,
        user=admin_login,
        password=admin_password,
        database=database,
        autocommit=True,
        login_timeout=30,
    )
    try:
        cursor = connection.cursor()
        if _updateability(cursor) == "READ_ONLY":
            # A retry after the first attempt got this far: users can only change read-write.
            cursor.execute("ALTER DATABASE CURRENT SET READ_WRITE WITH ROLLBACK IMMEDIATE")
        password = new_password()
        for statement in access_statements(CLONE_USER, password, read_only=read_only):
            cursor.execute(statement)
        state = _updateability(cursor)
        roles = [role for role in WRITING_ROLES if _is_member(cursor, role)]
    finally:
        connection.close()
    if read_only and (state != "READ_ONLY" or roles):
        raise CloneAccessFailed(
            f"the clone's database {database} reads {state} and its user is in {roles or 'no'} "
            "writing role(s) after being made read-only; the clone's web app was not created"
        )
    return {
        "user": CLONE_USER,
        "password": password,
        "updateability": state,
        "writing_roles": roles,
    }


def _updateability(cursor: Any) -> str:
    cursor.execute("SELECT CAST(DATABASEPROPERTYEX(DB_NAME(), 'Updateability') AS nvarchar(20))")
    return str(cursor.fetchone()[0])


def _is_member(cursor: Any, role: str) -> bool:
    cursor.execute(f"SELECT IS_ROLEMEMBER(N'{role}', N'{CLONE_USER}')")
    return bool(cursor.fetchone()[0])


def as_administrator(props: dict[str, Any]) -> dict[str, Any]:
    """The administrator's login and the retries of a resource made as the administrator
    (`AsAdministrator`), as its work takes them (the engine gives numbers back as floats)."""
    return {
        "admin_login": props["admin_login"],
        "admin_password": props["admin_password"],
        "attempts": int(props["attempts"]),
        "pause_seconds": float(props["pause_seconds"]),
    }


class AsAdministrator(Resource):
    """Made once by its provider on the machine that runs the update, connected as the
    server's administrator and retried while the operator's firewall rule applies: the clone's
    own login into its copy. `user` and `password` (secret): what the clone's web app connects
    with; `read_back`: what the database said once they were given."""

    user: pulumi.Output[str]
    password: pulumi.Output[str]

    def __init__(
        self,
        provider: ResourceProvider,
        name: str,
        inputs: dict[str, Any],
        settings: AzureSettings,
        read_back: Sequence[str],
        opts: pulumi.ResourceOptions | None,
    ) -> None:
        props = {
            **inputs,
            "admin_login": settings.sql_admin_login,
            "admin_password": settings.sql_admin_password,
            "attempts": settings.migration_attempts,
            "pause_seconds": settings.migration_retry_seconds,
            **dict.fromkeys(["user", "password", *read_back]),
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["password", "admin_password"])
        super().__init__(provider, name, props, pulumi.ResourceOptions.merge(opts, secret))


class CloneAccessProvider(ResourceProvider):
    """Gives a copy its access once; a new copy (another database) gets it again."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = grant_clone_access(
            server=props["server"],
            database=props["database"],
            read_only=bool(props["read_only"]),
            **as_administrator(props),
        )
        return CreateResult(
            id_=f"{props['server']}/{props['database']}/{CLONE_USER}",
            outs={**props, **outs},
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return replaced_when_changed(olds, news, ("server", "database", "read_only"))


class CloneAccess(AsAdministrator):
    """The Azure SQL copy's contained user; `updateability` and `writing_roles`: what the
    database said once it was given."""

    updateability: pulumi.Output[str]
    writing_roles: pulumi.Output[Sequence[str]]

    def __init__(
        self,
        name: str,
        *,
        server: pulumi.Input[str],
        database: pulumi.Input[str],
        read_only: bool,
        settings: AzureSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {"server": server, "database": database, "read_only": read_only}
        read_back = ["updateability", "writing_roles"]
        super().__init__(CloneAccessProvider(), name, inputs, settings, read_back, opts)
