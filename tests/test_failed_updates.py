"""Every recovery from every failed update: after a migration that fails, a release that does
not start and a health check that never passes, each of `rollback --code-only`,
`rollback --with-database` and `rollforward` works without running what failed again, and the
rows visitors wrote before are served afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.commands import Result
from tests.helpers.specs import write_spec

pytestmark = pytest.mark.engine(minutes=2)

# The failing release, the exit code its deployment stops with, and what the error says.
FAILURES = {
    "migration": ("v3-bad-migration", 5, "app spec `migrate` of v3-bad-migration failed"),
    "start": ("v9-cannot-start", 5, "app spec `start` of v9-cannot-start (primary) failed"),
    "health": ("v3-unhealthy", 4, "the primary on v3-unhealthy is not healthy"),
}
RECOVERIES = (
    ("rollback", "--code-only"),
    ("rollback", "--with-database"),
    ("rollforward", "--version", "v2.1"),
)


def write(public: str) -> str:
    title = f"row-{uuid.uuid4().hex[:8]}"
    answer = httpx.post(f"{public}/api/articles", json={"title": title, "text": "x"}, timeout=10)
    assert answer.status_code == 201, answer.text
    return title


def served_titles(public: str) -> set[str]:
    return set(httpx.get(f"{public}/api/articles/titles", timeout=10).json())


@pytest.mark.parametrize("failure", list(FAILURES))
def test_each_recovery_works_after_a_failed_update(
    failure: str,
    tmp_path: Path,
    local_stack: Callable[..., dict[str, Any]],
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
) -> None:
    version, code, message = FAILURES[failure]
    stack = local_stack("v2", write_spec(tmp_path))
    name, public = stack["stack"], stack["public_url"]
    assert pulumi("config", "set", "-s", name, "zdd:gateTimeoutSeconds", "6").code == 0
    written: set[str] = set()
    for recovery in RECOVERIES:
        written.add(write(public))
        failed = zdd("deploy", "-s", name, "--version", version, "--yes", "--json")
        assert failed.code == code, failed.stderr
        error = failed.json()["error"]
        assert message in error, error
        assert "rollback --code-only" in error and "rollback --with-database" in error

        recovered = zdd(*recovery, "-s", name, "--json")
        assert recovered.code == 0, (recovery, recovered.stderr)
        # What failed was not run again: its error is nowhere in the recovery's output.
        assert message not in recovered.stderr, recovered.stderr
        status = zdd("status", "-s", name, "--json").json()
        expected = "v2.1" if recovery[0] == "rollforward" else "v2"
        assert (status["phase"], status["current_version"], status["traffic"]) == (
            "idle",
            expected,
            "primary",
        )
        assert written <= served_titles(public), f"rows lost after {recovery}"
