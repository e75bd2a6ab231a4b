"""The phase model: what exists in each phase and which moves between phases are legal.

Pure: no Pulumi, no I/O. The Pulumi program turns a `Declaration` into resources; the driver
uses `next_phase`/`check_transition` to decide what to do. Both targets share this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from zdd.errors import BadInput, RefusedTransition


class Phase(StrEnum):
    IDLE = "idle"
    CLONE = "clone"
    CUTOVER = "cutover"
    DEPLOY = "deploy"
    RETURN = "return"
    # An abort once traffic may have reached the clone: the traffic goes back to the untouched
    # primary while the clone is kept, like `return`, until no request reaches it any more.
    WITHDRAW = "withdraw"


class Mode(StrEnum):
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"


class Strategy(StrEnum):
    """How a deployment keeps the site up while the primary database changes."""

    # A copy of the database serves, read-only, while the primary is migrated.
    CLONE = "clone"
    # A rehearsal proved the running release works on the new schema: it keeps serving the
    # primary database, writes and all, while that database is migrated in place.
    COMPATIBLE = "compatible"


class Instance(StrEnum):
    PRIMARY = "primary"
    CLONE = "clone"


# The response header a front door of the platform's own (HAProxy locally) sets on every answer
# from a site: the `Instance` that gave it. An answer without it came from the front door itself.
SERVED_BY_HEADER = "X-ZDD-Server"
# The answer header of a write the front door held before passing it on: how long, in ms.
HELD_HEADER = "X-ZDD-Held"


class DatabaseMode(StrEnum):
    """The site's own words for it (`EpiServer__Cms__DataAccess__DatabaseMode`)."""

    READ_WRITE = "ReadWrite"
    READ_ONLY = "ReadOnly"


class EdgeWrites(StrEnum):
    """What the front door does with a visitor's write (any method but GET, HEAD, OPTIONS)."""

    PASS = "passed"  # to the instance that has the traffic
    HOLD = "held"  # kept waiting, then carried out by the primary once it serves again
    REFUSE = "refused"  # answered 503 + Retry-After by the front door itself


# How long an origin the traffic left may take to answer the requests it still has (the drain
# gate's bound, whether the driver or a program's own switch waits for it).
DRAIN_TIMEOUT_SECONDS = 60.0

# How long the front door holds a write by default before it refuses it after all.
DEFAULT_HOLD_WRITES_SECONDS = 30.0
MAX_HOLD_WRITES_SECONDS = 3_600.0


# A cloud site reads its `DatabaseMode` from both app settings: the CMS's own key and a generic one.
DATABASE_MODE_SETTINGS = ("EpiServer__Cms__DataAccess__DatabaseMode", "ZDD_DATABASE_MODE")


# The order of a smooth deployment; `idle` both starts and ends it.
DEPLOYMENT_ORDER: tuple[Phase, ...] = (
    Phase.IDLE,
    Phase.CLONE,
    Phase.CUTOVER,
    Phase.DEPLOY,
    Phase.RETURN,
    Phase.IDLE,
)

# An abort that may find the traffic on the clone: the traffic moves back, then the clone goes.
ABORT_ORDER: tuple[Phase, ...] = (Phase.CUTOVER, Phase.WITHDRAW, Phase.IDLE)

# Every target names its restore point resource `<database>-restore-point`, with outputs
# `restore_point`, `taken_at` and `digest`: the driver looks for it in the stack's state.
RESTORE_POINT_SUFFIX = "-restore-point"


@dataclass(frozen=True)
class RestorePointTaken:
    """A restore point as the update that took it recorded it in the stack's state."""

    id: str
    taken_at: float  # epoch seconds
    digest: str  # of the database's content at that moment

    @classmethod
    def from_record(cls, record: object) -> RestorePointTaken | None:
        """The proof in a stack output or resource state, or None when it is not complete."""
        if not isinstance(record, Mapping):
            return None
        point, taken_at, digest = (record.get(k) for k in ("restore_point", "taken_at", "digest"))
        if not (isinstance(point, str) and point and isinstance(digest, str) and digest):
            return None
        if not isinstance(taken_at, int | float) or taken_at <= 0:
            return None
        return cls(point, float(taken_at), digest)


# A target that migrates through a resource of its own names it `<database>-migration`, with the
# output `version`: after a failed update the state tells which migration really ran last.
MIGRATION_SUFFIX = "-migration"
# A target that verifies a site in its program (before a front door switches to it) names that
# resource `<site>-verified`: a failure there is a failed gate, not a failed deployment step.
VERIFICATION_SUFFIX = "-verified"
# A target whose program switches the traffic to the clone and waits for the primary's drain
# before it touches the primary names that resource `<front door>-cutover`, with the output
# `switched_at` (epoch seconds): in the state, it proves the traffic left the primary. A failure
# there is a failed gate too (the drain), and the primary was not touched.
CUTOVER_SUFFIX = "-cutover"
# The resources whose failure is a failed gate of the program's own.
PROGRAM_GATE_SUFFIXES = (VERIFICATION_SUFFIX, CUTOVER_SUFFIX)
# A cloud restore point is a moment within the database's kept backups: a rollback with database
# needs at least this many days of them (the program refuses less, the policies too).
MIN_BACKUP_RETENTION_DAYS = 7

# Phases in which public traffic is on the clone, so the primary may be changed or recovered.
TRAFFIC_ON_CLONE: frozenset[Phase] = frozenset({Phase.CUTOVER, Phase.DEPLOY})
# Phases whose update begins, on a target whose program switches, with the switch to the clone
# (done once per deployment: `return` switches back only after it).
SWITCHED_TO_CLONE: frozenset[Phase] = TRAFFIC_ON_CLONE | {Phase.RETURN}

# A version labels a release (a folder locally, a tag on Azure): real apps use `2.9.2` as well as
# `v2`. No '/', and a letter or digit first, so it never leaves the releases folder.
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Restore point ids become file names locally and points in time on Azure (ISO 8601).
_RESTORE_POINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$")


class InvalidStackConfig(BadInput, ValueError):
    """The stack's `zdd:*` configuration does not describe a legal state."""


class IllegalTransition(RefusedTransition, ValueError):
    """A move between phases that the design forbids; nothing was changed."""


def is_valid_version(version: str) -> bool:
    return bool(_VERSION_RE.fullmatch(version))


def accepts_data_loss(values: Mapping[str, str]) -> bool:
    """`zdd:acceptDataLoss` (keys without the namespace), as the program and policies read it."""
    return values.get("acceptDataLoss", "false").lower() == "true"


def database_generation(values: Mapping[str, str]) -> int:
    """`zdd:databaseGeneration` (1 when unset); raises InvalidStackConfig."""
    try:
        return int(values.get("databaseGeneration", "1"))
    except ValueError:
        raise InvalidStackConfig("zdd:databaseGeneration must be a whole number") from None


def _seconds(values: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(values.get(key, default))
    except ValueError:
        raise InvalidStackConfig(f"zdd:{key} must be a number of seconds") from None


@dataclass(frozen=True)
class PhaseSettings:
    """The `zdd:*` stack config that decides what exists."""

    phase: Phase
    current_version: str
    target_version: str | None = None
    mode: Mode = Mode.READ_ONLY
    accept_data_loss: bool = False
    # Set by the driver before the first change to the primary database.
    restore_point: str | None = None
    # The primary database's generation; a rollback with database creates a new one.
    database_generation: int = 1
    # The version whose schema the primary database carries outside a deployment (set after a
    # code-only rollback left it ahead of the code); defaults to the current version.
    database_version: str | None = None
    # In deploy/return: the version whose schema the primary database is migrated to
    # (defaults to the target version; a code-only rollback keeps the schema it has).
    migrate_to: str | None = None
    # The restore point the current database generation was restored from (generation > 1).
    restored_from: str | None = None
    # How long the front door holds a write while a read-only clone is made and serves
    # (0: refuse at once); the deployment stops for approval with writes refused.
    hold_writes_seconds: float = DEFAULT_HOLD_WRITES_SECONDS
    await_approval: bool = False
    strategy: Strategy = Strategy.CLONE
    # A rehearsal the engine makes (a cloud target, whose copy only the engine can make): in
    # `idle`, the clone's web app runs the current release on a copy of the primary database
    # migrated to this version, reached by the operator only; nothing public changes.
    rehearse: str | None = None

    @classmethod
    def from_config(cls, values: Mapping[str, str]) -> PhaseSettings:
        """Read the `zdd:*` config (keys without the namespace); raises InvalidStackConfig."""

        def enum_value(kind: type[StrEnum], key: str, default: str) -> StrEnum:
            raw = values.get(key, default)
            try:
                return kind(raw)
            except ValueError:
                allowed = ", ".join(m.value for m in kind)
                raise InvalidStackConfig(f"zdd:{key} {raw!r} is not one of: {allowed}") from None

        if "currentVersion" not in values:
            raise InvalidStackConfig("zdd:currentVersion is not set")
        generation = database_generation(values)
        settings = cls(
            phase=Phase(enum_value(Phase, "phase", Phase.IDLE)),
            current_version=values["currentVersion"],
            target_version=values.get("targetVersion") or None,
            mode=Mode(enum_value(Mode, "mode", Mode.READ_ONLY)),
            accept_data_loss=accepts_data_loss(values),
            restore_point=values.get("restorePoint") or None,
            database_generation=generation,
            database_version=values.get("databaseVersion") or None,
            migrate_to=values.get("migrateTo") or None,
            restored_from=values.get("restoredFrom") or None,
            hold_writes_seconds=_seconds(values, "holdWritesSeconds", DEFAULT_HOLD_WRITES_SECONDS),
            await_approval=values.get("awaitApproval", "false").lower() == "true",
            strategy=Strategy(enum_value(Strategy, "strategy", Strategy.CLONE)),
            rehearse=values.get("rehearse") or None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not is_valid_version(self.current_version):
            raise InvalidStackConfig(
                f"zdd:currentVersion {self.current_version!r} is not a version"
            )
        if self.target_version is not None and not is_valid_version(self.target_version):
            raise InvalidStackConfig(f"zdd:targetVersion {self.target_version!r} is not a version")
        if self.phase in (Phase.DEPLOY, Phase.RETURN) and self.target_version is None:
            raise InvalidStackConfig(f"phase {self.phase} needs zdd:targetVersion")
        if self.phase in (Phase.DEPLOY, Phase.RETURN) and self.restore_point is None:
            raise InvalidStackConfig(
                f"phase {self.phase} needs zdd:restorePoint: the primary database is never "
                "changed before a restore point is recorded"
            )
        if self.mode is Mode.READ_WRITE and not self.accept_data_loss:
            raise InvalidStackConfig(
                "zdd:mode read-write needs zdd:acceptDataLoss true: writes to the clone are "
                "not kept when it is destroyed"
            )
        if self.strategy is Strategy.COMPATIBLE and self.mode is Mode.READ_WRITE:
            raise InvalidStackConfig(
                "zdd:strategy compatible has no clone database, so zdd:mode read-write means "
                "nothing there: remove one of them"
            )
        if self.rehearse is not None:
            if self.phase is not Phase.IDLE or self.target_version is not None:
                raise InvalidStackConfig(
                    "zdd:rehearse is for a stack at rest (phase idle, no deployment): a "
                    "deployment's clone would be the rehearsal's; remove zdd:rehearse"
                )
            if not is_valid_version(self.rehearse) or self.rehearse == self.current_version:
                raise InvalidStackConfig(
                    f"zdd:rehearse {self.rehearse!r} is not a version other than the current one"
                )
        if not 0 <= self.hold_writes_seconds <= MAX_HOLD_WRITES_SECONDS:
            raise InvalidStackConfig(
                f"zdd:holdWritesSeconds must be from 0 to {MAX_HOLD_WRITES_SECONDS:g} seconds"
            )
        if self.database_generation < 1:
            raise InvalidStackConfig("zdd:databaseGeneration must be 1 or more")
        if self.database_generation > 1 and not self.restored_from:
            raise InvalidStackConfig(
                "zdd:databaseGeneration above 1 needs zdd:restoredFrom (the restore point)"
            )
        points = (("restorePoint", self.restore_point), ("restoredFrom", self.restored_from))
        for key, value in points:
            if value is not None and not _RESTORE_POINT_RE.match(value):
                raise InvalidStackConfig(
                    f"zdd:{key} {value!r} is not a restore point id: use up to 64 letters, "
                    "digits, ':', '.', '_' or '-', starting with a letter or digit"
                )
        schemas = (("databaseVersion", self.database_version), ("migrateTo", self.migrate_to))
        for key, value in schemas:
            if value is not None and not is_valid_version(value):
                raise InvalidStackConfig(f"zdd:{key} {value!r} is not a version")


# The config keys that decide what exists: the program exports their digest, so the driver
# can tell whether the stack's last update applied the config it has now.
DECIDING_KEYS = (
    "phase", "currentVersion", "targetVersion", "mode", "acceptDataLoss", "restorePoint",
    "databaseGeneration", "databaseVersion", "migrateTo", "restoredFrom", "app",
    "holdWritesSeconds", "awaitApproval", "strategy", "rehearse",
)  # fmt: skip


def settings_digest(config: Mapping[str, str]) -> str:
    deciding = {key: config[key] for key in DECIDING_KEYS if config.get(key)}
    return hashlib.sha256(json.dumps(deciding, sort_keys=True).encode()).hexdigest()[:16]


# A local stack's ports from `zdd:basePort` on: front door, primary, clone, database server,
# the clone's database server.
PORTS_PER_STACK = 5

# The `zdd:*` keys that tune a stack without deciding what exists: (kind, smallest, largest).
OPERATIONAL_KEYS: dict[str, tuple[type[int] | type[float], float, float]] = {
    "gateTimeoutSeconds": (float, 1, 86_400),
    "archiveRetention": (int, 1, 1_000),
    "basePort": (int, 1_024, 65_536 - PORTS_PER_STACK),
}


def check_operational_config(values: Mapping[str, str]) -> None:
    """Refuse a malformed tuning key before it reaches a timeout, a file count or a port."""
    for key, (kind, smallest, largest) in OPERATIONAL_KEYS.items():
        raw = values.get(key)
        if raw is None:
            continue
        try:
            number = kind(raw)
        except ValueError:
            number = None
        if number is None or not smallest <= number <= largest:
            noun = "a whole number" if kind is int else "a number"
            raise InvalidStackConfig(
                f"zdd:{key} {raw!r} must be {noun} from {smallest:g} to {largest:g}"
            )


@dataclass(frozen=True)
class SiteDeclaration:
    """One web app as a phase declares it: which instance, on which version and database."""

    instance: Instance
    version: str
    database: Instance
    database_mode: DatabaseMode
    # The new primary: a front door switches to it only once it answered its health path as
    # this version (on a target whose program verifies it; elsewhere the driver's gate does).
    verified: bool = False


@dataclass(frozen=True)
class Declaration:
    """Everything that exists in one phase, in the user's words."""

    phase: Phase
    primary: SiteDeclaration
    clone: SiteDeclaration | None
    traffic: Instance
    # The version whose schema the primary database must carry.
    primary_database_version: str
    primary_database_generation: int
    restore_point: str | None
    # The restore point the primary database generation was restored from, if any.
    restored_from: str | None = None
    # What a front door that switches at once does with a write (rule 11 of docs/design.md).
    edge_writes: EdgeWrites = EdgeWrites.PASS
    hold_writes_seconds: float = DEFAULT_HOLD_WRITES_SECONDS
    # The compatible strategy's clone: the primary database generation it serves. After a
    # rollback with database it stays on the one the deployment began on, so the instance that
    # holds the traffic never restarts; what it writes there is lost, and reported.
    shared_database_generation: int | None = None
    # A rehearsal (`zdd:rehearse`): the clone's copy is migrated to this version and the clone
    # runs the current release on it, outside the front door.
    rehearsal_version: str | None = None
    # The switch to the clone, on a target whose program makes it (`zdd.registry.TargetEntry`):
    # what the front door does with writes from then on, until the primary serves again. None
    # outside the phases in which the clone holds or held the traffic.
    cutover_writes: EdgeWrites | None = None

    @property
    def has_clone(self) -> bool:
        return self.clone is not None


def declare(settings: PhaseSettings) -> Declaration:
    """What exists in `settings.phase`: the phase table of docs/design.md."""
    settings.validate()
    phase = settings.phase
    primary_on_target = phase in (Phase.DEPLOY, Phase.RETURN)
    primary_version = (
        settings.target_version
        if primary_on_target and settings.target_version
        else settings.current_version
    )
    primary = SiteDeclaration(
        instance=Instance.PRIMARY,
        version=primary_version,
        database=Instance.PRIMARY,
        database_mode=DatabaseMode.READ_WRITE,
        verified=primary_on_target,
    )
    clone = None
    shared_generation = None
    if settings.rehearse is not None:
        # The current release on a migrated copy, writes and all (a write it refuses is the
        # rehearsal's answer); the copy is the rehearsal's own, never served to a visitor.
        clone = SiteDeclaration(
            instance=Instance.CLONE,
            version=settings.current_version,
            database=Instance.CLONE,
            database_mode=DatabaseMode.READ_WRITE,
        )
    elif phase is not Phase.IDLE and settings.strategy is Strategy.COMPATIBLE:
        shared_generation = settings.database_generation - int(restored_in_deployment(settings))
        # The current release's second instance, on the primary database itself: it holds
        # the traffic, writes included, while the primary instance drains, its database is
        # migrated in place and it restarts on the target version (rule 14).
        clone = SiteDeclaration(
            instance=Instance.CLONE,
            version=settings.current_version,
            database=Instance.PRIMARY,
            database_mode=DatabaseMode.READ_WRITE,
        )
    elif phase is not Phase.IDLE:
        clone = SiteDeclaration(
            instance=Instance.CLONE,
            version=settings.current_version,
            database=Instance.CLONE,
            database_mode=(
                DatabaseMode.READ_WRITE
                if settings.mode is Mode.READ_WRITE
                else DatabaseMode.READ_ONLY
            ),
        )
    return Declaration(
        phase=phase,
        primary=primary,
        clone=clone,
        traffic=Instance.CLONE if phase in TRAFFIC_ON_CLONE else Instance.PRIMARY,
        primary_database_version=(
            (settings.migrate_to or primary_version)
            if primary_on_target
            else (settings.database_version or settings.current_version)
        ),
        primary_database_generation=settings.database_generation,
        restore_point=settings.restore_point if phase is not Phase.IDLE else None,
        restored_from=settings.restored_from if settings.database_generation > 1 else None,
        edge_writes=edge_writes(settings),
        hold_writes_seconds=settings.hold_writes_seconds,
        shared_database_generation=shared_generation,
        rehearsal_version=settings.rehearse,
        cutover_writes=(
            edge_writes(replace(settings, phase=Phase.CUTOVER))
            if clone is not None and phase in SWITCHED_TO_CLONE
            else None
        ),
    )


def restored_in_deployment(settings: PhaseSettings) -> bool:
    """The primary database generation was restored from this deployment's restore point."""
    return settings.restored_from is not None and settings.restored_from == settings.restore_point


def edge_writes(settings: PhaseSettings) -> EdgeWrites:
    """Writes wait from the moment a read-only clone's copy is taken until the primary serves
    again, so the clone serves every write acknowledged before it took the traffic (rule 11):
    a write the primary acknowledged after the copy would be missing there."""
    if settings.mode is Mode.READ_WRITE or settings.phase in (
        Phase.IDLE,
        Phase.RETURN,
        Phase.WITHDRAW,
    ):
        return EdgeWrites.PASS
    if settings.strategy is Strategy.COMPATIBLE:
        return EdgeWrites.PASS  # both instances serve the one database
    waiting_for_a_person = settings.phase is Phase.DEPLOY and settings.await_approval
    if settings.hold_writes_seconds == 0 or waiting_for_a_person:
        return EdgeWrites.REFUSE
    return EdgeWrites.HOLD


def next_phase(phase: Phase) -> Phase:
    """The phase a deployment moves to after `phase` (`return` and `withdraw` go to `idle`)."""
    order = ABORT_ORDER if phase is Phase.WITHDRAW else DEPLOYMENT_ORDER
    return order[order.index(phase) + 1]


def check_transition(current: Phase, requested: Phase, *, switches_in_program: bool) -> None:
    """Refuse any move that is not one step forward, a re-run, or an abort that leaves the
    primary untouched: to `idle` while the traffic never left the primary, else to `withdraw`.
    On a target whose program switches to the clone after the primary's drain and back only
    after verifying the new primary (`zdd.registry.TargetEntry`), `clone` goes straight to
    `deploy` or `return`, and `cutover` straight to `return`."""
    if requested == current:
        return  # re-running a phase is idempotent
    if current is not Phase.IDLE and requested == next_phase(current):
        return
    if switches_in_program and (current, requested) in _SWITCHED_IN_PROGRAM:
        return
    if current is Phase.IDLE and requested is Phase.CLONE:
        return
    if requested is Phase.IDLE and current is Phase.CLONE:
        return  # abort before the switch: the clone never had the traffic
    if requested is Phase.WITHDRAW and current in (Phase.CLONE, Phase.CUTOVER):
        # Abort once the switch was asked for. From `clone` too: an update that failed after
        # its switch to the clone leaves `clone` as the last applied phase.
        return
    raise IllegalTransition(_why_illegal(current, requested))


# The moves the program's own switch and verification make safe: the update itself switches to
# the clone and waits for the drain before the primary's restore point and migration, and
# switches back only once the new primary answered as its version.
_SWITCHED_IN_PROGRAM = frozenset(
    {(Phase.CLONE, Phase.DEPLOY), (Phase.CLONE, Phase.RETURN), (Phase.CUTOVER, Phase.RETURN)}
)


def _why_illegal(current: Phase, requested: Phase) -> str:
    if requested is Phase.IDLE and current is Phase.CUTOVER:
        return (
            "cannot go to idle from cutover: the clone holds the traffic and would be deleted "
            "under it; an abort moves the traffic back first (phase withdraw)"
        )
    if requested in (Phase.DEPLOY, Phase.RETURN) and current is Phase.CLONE:
        return (
            f"cannot go to {requested} from clone on this target: the traffic moves to the "
            "clone first (phase cutover), and the primary drains, before it is changed"
        )
    if requested is Phase.RETURN and current is not Phase.DEPLOY:
        return (
            f"cannot return traffic to the primary from phase {current}: the primary has not "
            "been deployed and verified yet"
        )
    if requested is Phase.IDLE and current is Phase.DEPLOY:
        return (
            "cannot go to idle from deploy: the primary was changed; complete the deployment "
            "(return) or roll back first"
        )
    if requested is Phase.CLONE and current is not Phase.IDLE:
        return f"a deployment is already in progress (phase {current}); resume or finish it first"
    return f"cannot move from phase {current} to {requested}"
