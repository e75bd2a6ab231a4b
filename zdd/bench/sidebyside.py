"""Each phase's `pulumi up` by hand through the CLI against the same phase through `zdd`, with
the difference split into named parts.

Two fresh stacks of the same shape move from v1 to v2 in lockstep, phase by phase, so both
sides of a pair run under the same load: one by hand as the README's sequence does it
(`pulumi config set`, untimed, then a timed `pulumi up --yes --skip-preview` with the policy
pack zdd runs), the other by the driver, one `advance` at a time. A zdd phase runs from the
step that writes its config to the end of the check after its update (the read-only window is
measured in `scaling`: here the other stack's phases run inside it). Its time minus the raw
`pulumi up` is split into:

- gate: the driver's time outside any call on its stack (its checks: a profile shows its
  own code takes milliseconds);
- config: reading and writing the stack's config;
- engine: the driver's `pulumi up` (Automation API) minus the raw one;
- reads: outputs, state and lock reads.

The goal: every phase within its raw `pulumi up` + gate + `ALLOWANCE_SECONDS`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from zdd.actions import Action
from zdd.bench.load import say
from zdd.bench.metrics import rounded
from zdd.bench.stacks import TO_VERSION, BenchSite, fresh_stack
from zdd.environment import Environment
from zdd.phases import Mode, Phase
from zdd.results import DeployResult

ROUNDS = int(os.environ.get("BENCH_SIDE_BY_SIDE_ROUNDS", "3"))
ALLOWANCE_SECONDS = 0.3
PARTS = ("gate", "config", "engine", "reads")
# The README's by-hand sequence as the driver takes it without approval (`clone` straight to
# `return`): the config each phase's `pulumi up` is given (None removes).
BY_HAND: tuple[tuple[Phase, Mapping[str, str | None]], ...] = (
    (Phase.CLONE, {"targetVersion": TO_VERSION, "phase": "clone"}),
    (Phase.RETURN, {"restorePoint": "rp-1", "phase": "return"}),
    (Phase.IDLE, {"currentVersion": TO_VERSION, "targetVersion": None, "phase": "idle"}),
)


def config_commands(stack: str, change: Mapping[str, str | None]) -> list[list[str]]:
    """`pulumi config set/rm` for each key of `change`, as a person types them."""
    return [
        ["pulumi", "config", "rm", "-s", stack, f"zdd:{key}"]
        if value is None
        else ["pulumi", "config", "set", "-s", stack, f"zdd:{key}", value]
        for key, value in change.items()
    ]


def up_command(stack: str, policy_packs: Sequence[str]) -> list[str]:
    """The raw update zdd's own matches: no preview, the same policy pack."""
    packs = [arg for pack in policy_packs for arg in ("--policy-pack", pack)]
    return ["pulumi", "up", "--yes", "--skip-preview", "-s", stack, *packs]


def split(
    zdd_seconds: float, raw_up: float, zdd_up: float, config: float, reads: float
) -> dict[str, float]:
    """The parts of `zdd_seconds - raw_up`; together they are exactly that difference."""
    return {
        "gate": zdd_seconds - zdd_up - config - reads,
        "config": config,
        "engine": zdd_up - raw_up,
        "reads": reads,
    }


def within_goal(zdd_seconds: float, raw_up: float, gate: float) -> bool:
    return zdd_seconds <= raw_up + gate + ALLOWANCE_SECONDS


class _ByHand:
    def __init__(self, env: Environment, site: BenchSite) -> None:
        self.env, self.name = env, site.name

    def _run(self, argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(argv, cwd=self.env.root, check=True, capture_output=True, text=True)
        return time.perf_counter() - started

    def phase(self, change: Mapping[str, str | None]) -> float:
        for argv in config_commands(self.name, change):
            self._run(argv)
        return self.up()

    def up(self) -> float:
        return self._run(up_command(self.name, self.env.policy_packs()))


def _zdd_phase(site: BenchSite, result: DeployResult) -> dict[str, float]:
    """Advance until the next phase is done; its time and its calls on the stack by kind."""
    started = time.time()
    before = len(result.phases)
    while len(result.phases) == before:
        if not site.driver.advance(result):
            raise RuntimeError("the deployment ended before its phases did")
    ended = time.time()
    calls = site.stack.seconds_by_kind(started, ended)
    ups = [u for u in site.stack.ups if u.started >= started and u.ended <= ended]
    return {
        "seconds": ended - started,
        "up": sum(u.seconds for u in ups),
        "config": calls["config"],
        "reads": calls["reads"],
    }


def _round(env: Environment, number: int) -> dict[str, Any]:
    with ExitStack() as stacks:
        raw_site = stacks.enter_context(fresh_stack(env, f"byhand{number}"))
        site = stacks.enter_context(fresh_stack(env, f"zdd{number}"))
        by_hand = _ByHand(env, raw_site)
        noop = {
            "raw": by_hand.up(),
            "automation_api": _timed(lambda: site.stack.up(policy_packs=env.policy_packs())),
        }
        begun = time.perf_counter()
        result, _change = site.driver.begin(Action.DEPLOY, version=TO_VERSION, mode=Mode.READ_ONLY)
        site.driver.clear_interrupted_update()
        before_phases = time.perf_counter() - begun
        phases = []
        for phase, change in BY_HAND:
            # Each side goes first in every other round: a drift of the machine's load hits both.
            if number % 2:
                raw_up = by_hand.phase(change)
                zdd = _zdd_phase(site, result)
            else:
                zdd = _zdd_phase(site, result)
                raw_up = by_hand.phase(change)
            parts = split(zdd["seconds"], raw_up, zdd["up"], zdd["config"], zdd["reads"])
            phases.append({"phase": str(phase), "raw_up": raw_up, "zdd": zdd["seconds"], **parts})
            say(f"  {phase}: by hand {raw_up:.2f}s, zdd {zdd['seconds']:.2f}s {_words(parts)}")
    return {
        "noop_up": noop,
        "before_phases": before_phases,
        "phases": phases,
    }


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _words(parts: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {seconds:+.2f}s" for name, seconds in parts.items())


def median_phases(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per phase, the median of each figure over the rounds, and whether the goal is met by
    the medians."""
    table = []
    for index, (phase, _change) in enumerate(BY_HAND):
        rows = [r["phases"][index] for r in rounds]
        row: dict[str, Any] = {"phase": str(phase)}
        for key in ("raw_up", "zdd", *PARTS):
            row[key] = rounded(statistics.median(r[key] for r in rows))
        row["difference"] = rounded(row["zdd"] - row["raw_up"])
        row["within_goal"] = within_goal(row["zdd"], row["raw_up"], row["gate"])
        table.append(row)
    return table


def side_by_side(env: Environment) -> dict[str, Any]:
    say(f"side by side: `pulumi up` by hand against zdd, phase by phase, {ROUNDS} round(s)")
    rounds = [_round(env, number) for number in range(1, ROUNDS + 1)]
    phases = median_phases(rounds)

    def median_of(key: str) -> float:
        return rounded(statistics.median(r["noop_up"][key] for r in rounds))

    return {
        "phases": phases,
        "all_within_goal": all(p["within_goal"] for p in phases),
        "allowance_seconds": ALLOWANCE_SECONDS,
        "noop_up": {"raw": median_of("raw"), "automation_api": median_of("automation_api")},
        "before_phases_seconds": rounded(statistics.median(r["before_phases"] for r in rounds)),
        "rounds": [
            {
                **r,
                "phases": [{k: _rounded_any(v) for k, v in p.items()} for p in r["phases"]],
                "noop_up": {k: rounded(v) for k, v in r["noop_up"].items()},
                "before_phases": rounded(r["before_phases"]),
            }
            for r in rounds
        ],
    }


def _rounded_any(value: Any) -> Any:
    return rounded(value) if isinstance(value, float) else value
