"""The clone's access to its copy against a fake SQL connection: which statements run, in which
order, and what counts as done (no Azure, no SQL server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from infra.azure.clone_access import (
    CLONE_USER,
    CloneAccessFailed,
    access_statements,
    grant_clone_access,
)


@dataclass
class FakeDatabase:
    """A database that keeps what the statements did: its users' roles and whether it is
    read-only. `ignore_read_only` plays a server that accepts the statement and changes
    nothing; `refusals` connection attempts fail first."""

    read_only: bool = False
    roles: dict[str, set[str]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ignore_read_only: bool = False
    refusals: int = 0
    connections: list[dict[str, Any]] = field(default_factory=list)
    _last: str = ""

    def connect(self, **options: Any) -> FakeDatabase:
        self.connections.append(options)
        if self.refusals:
            self.refusals -= 1
            raise ConnectionError("Login timeout expired")
        return self

    def cursor(self) -> FakeDatabase:
        return self

    def close(self) -> None:
        pass

    def execute(self, statement: str) -> None:
        if self.read_only and statement.startswith(("CREATE", "DROP", "ALTER ROLE")):
            raise RuntimeError("Failed to update database because the database is read-only")
        self.executed.append(statement)
        self._last = statement
        if statement.startswith("CREATE USER"):
            self.roles[CLONE_USER] = set()
        elif statement.startswith("ALTER ROLE"):
            role = statement.split("[")[1].split("]")[0]
            self.roles[CLONE_USER].add(role)
        elif statement.endswith("SET READ_ONLY WITH ROLLBACK IMMEDIATE"):
            self.read_only = not self.ignore_read_only
        elif statement.endswith("SET READ_WRITE WITH ROLLBACK IMMEDIATE"):
            self.read_only = False

    def fetchone(self) -> tuple[Any]:
        if "Updateability" in self._last:
            return ("READ_ONLY" if self.read_only else "READ_WRITE",)
        role = self._last.split("N'")[1].split("'")[0]
        return (int(role in self.roles.get(CLONE_USER, set())),)


def grant(database: FakeDatabase, *, read_only: bool = True, attempts: int = 3) -> dict[str, Any]:
    return grant_clone_access(
        server="s.database.windows.net",
        database="site-clone",
        admin_login="zddadmin",
        admin_password="Admin-Passw0rd!",
        read_only=read_only,
        attempts=attempts,
        pause_seconds=0,
        connect=database.connect,
        sleep=lambda _seconds: None,
    )


def test_a_read_only_copy_gets_a_reader_and_is_read_only_at_the_database():
    database = FakeDatabase()
    outcome = grant(database)
    assert database.read_only
    assert database.roles[CLONE_USER] == {"db_datareader"}
    assert outcome["updateability"] == "READ_ONLY" and outcome["writing_roles"] == []
    assert outcome["user"] == CLONE_USER and len(outcome["password"]) == 32
    # The user exists before the copy turns read-only (nothing can be created afterwards).
    statements = database.executed
    create = next(i for i, s in enumerate(statements) if s.startswith("CREATE USER"))
    read_only = next(i for i, s in enumerate(statements) if "SET READ_ONLY" in s)
    assert create < read_only
    # Connected to the copy as the administrator, with its own transactions off.
    (options,) = database.connections
    assert options["database"] == "site-clone" and options["autocommit"] is True


def test_a_read_write_copy_gets_a_writer_and_stays_writable():
    database = FakeDatabase()
    outcome = grant(database, read_only=False)
    assert not database.read_only
    assert database.roles[CLONE_USER] == {"db_datareader", "db_datawriter"}
    assert outcome["updateability"] == "READ_WRITE"


def test_a_copy_that_does_not_turn_read_only_fails_the_update():
    with pytest.raises(CloneAccessFailed, match="reads READ_WRITE"):
        grant(FakeDatabase(ignore_read_only=True))


def test_a_retry_after_the_copy_turned_read_only_starts_again():
    database = FakeDatabase(read_only=True, roles={CLONE_USER: {"db_datareader"}})
    grant(database)
    assert database.executed[1] == "ALTER DATABASE CURRENT SET READ_WRITE WITH ROLLBACK IMMEDIATE"
    assert database.read_only and database.roles[CLONE_USER] == {"db_datareader"}


def test_a_server_out_of_reach_is_tried_again_then_fails_in_one_line():
    reachable_late = FakeDatabase(refusals=2)
    grant(reachable_late, attempts=3)
    assert len(reachable_late.connections) == 3 and reachable_late.read_only
    with pytest.raises(CloneAccessFailed, match=r"after 2 attempt\(s\).*Login timeout"):
        grant(FakeDatabase(refusals=5), attempts=2)


def test_no_password_character_can_end_the_sql_literal():
    with pytest.raises(ValueError, match="T-SQL"):
        access_statements(CLONE_USER, "x'; DROP TABLE pages; --", read_only=True)
