"""The Azure restore point's proof: a resource that records, before the primary database's first
change, the point in time a rollback with database restores to and the database's content digest.

Azure SQL keeps the backups (a point-in-time restore can go back to any moment of the retention
period); what it cannot say is what the database held then. The app spec's `digest` command
reads that, on the machine that runs the update, and this resource records it. The id is the
point in time the driver took on Azure's clock after the drain; the digest is read after it, on
a primary that no public request reaches any more, and before the migration (which depends on
this resource). A command that fails or prints no digest fails the update: nothing is recorded,
and nothing of the primary is changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from infra.replacing import replaced_when_changed

# One line of printable characters: a hash, a checksum, or several of them.
_DIGEST_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,510}[\x21-\x7e])?$")
# What an error quotes of the command's own output.
_QUOTED_LINES = 5


class DigestFailed(Exception):
    """The app spec's `digest` did not give a digest; the message says what it did."""


def read_digest(
    argv: Sequence[str],
    environment: dict[str, str],
    *,
    attempts: int,
    pause_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run `argv` (never through a shell) until it succeeds, at most `attempts` times (a new
    firewall rule takes minutes to apply), and return the one line it printed."""
    complaint = "not run"
    for attempt in range(1, attempts + 1):
        try:
            done = subprocess.run(
                list(argv),
                env={**os.environ, **environment},
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise DigestFailed(
                f"app spec `digest` cannot run {argv[0]!r} ({exc.strerror}); no restore point "
                "was recorded and the primary was not changed"
            ) from None
        if done.returncode == 0:
            digest = done.stdout.strip()
            if not _DIGEST_RE.match(digest):
                raise DigestFailed(
                    f"app spec `digest` printed {digest[:80]!r}, not one line of at most 512 "
                    "printable characters; no restore point was recorded and the primary was "
                    "not changed"
                )
            return digest
        tail = " | ".join(done.stderr.strip().splitlines()[-_QUOTED_LINES:])
        complaint = f"exit {done.returncode}: {tail or 'no output'}"
        if attempt < attempts:
            sleep(pause_seconds)
    raise DigestFailed(
        f"app spec `digest` failed {attempts} time(s) ({complaint}); no restore point was "
        "recorded and the primary was not changed"
    )


class RestorePointProvider(ResourceProvider):
    """Reads the digest once, when the restore point is recorded; never again for it."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        digest = read_digest(
            props["argv"],
            props["environment"],
            attempts=int(props["attempts"]),
            pause_seconds=float(props["pause_seconds"]),
        )
        # The database's connection (a secret) is an input only: it is not kept as an output.
        outs = {
            "restore_point": props["restore_point"],
            "database": props["database"],
            "taken_at": time.time(),
            "digest": digest,
        }
        return CreateResult(id_=props["restore_point"], outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Bound to its point in time: a restored generation, a new command or a new password
        # later in the deployment change nothing about what was recorded then.
        return replaced_when_changed(olds, news, ("restore_point",))


class RestorePoint(Resource):
    """`restore_point`, `taken_at` (epoch seconds) and `digest`: what the driver reads as proof
    (`zdd.stack.StateEvidence.restore_point`)."""

    restore_point: pulumi.Output[str]
    taken_at: pulumi.Output[float]
    digest: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        restore_point: str,
        database: pulumi.Input[str],
        argv: pulumi.Input[list[str]],
        environment: dict[str, pulumi.Input[str]],
        attempts: int,
        pause_seconds: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "restore_point": restore_point,
            "database": database,
            "argv": argv,
            "environment": environment,
            "attempts": attempts,
            "pause_seconds": pause_seconds,
            "taken_at": None,
            "digest": None,
        }
        super().__init__(RestorePointProvider(), name, props, opts)
