"""Instruments on the engine: a stack that times its updates (from the engine's own events) and
every other call the driver makes on it, handed to the driver through its `stack` parameter."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pulumi import automation as auto

from zdd.bench.metrics import rounded
from zdd.chart import PhaseSpan
from zdd.console import Say
from zdd.stack import Outcome, Stack, StateEvidence, is_leaf_resource

# Resource outputs worth keeping in a step's record.
_KEPT_OUTPUTS = ("copy_seconds", "size_bytes")
# Engine events marking an update's stages, in order: the CLI has loaded the stack, the program
# registered its first resource, the last resource's outputs arrived, the update is over.
_MARKS = ("prelude", "program", "resources_done", "summary")
_STAGES = {
    "prelude": "cli_start_and_stack_load",
    "program": "language_host_and_program_start",
    "resources_done": "program_and_resources",
    "summary": "finish_and_state_write",
    "ended": "after_the_engine",
}
# Engine time between two resource steps shorter than this is not drawn on its own.
MIN_ENGINE_SPAN = 0.25


@dataclass
class ResourceStep:
    name: str
    op: str
    seconds: float
    outputs: dict[str, float] = field(default_factory=dict)
    # A resource a provider works on; components and providers only group or serve them.
    leaf: bool = True
    started: float = 0.0  # epoch seconds

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class UpRecord:
    label: str  # the phase the stack config asked for
    started: float  # epoch seconds, around the Automation API call
    ended: float
    engine_seconds: float  # what the engine reports for the update itself
    changes: dict[str, int]
    steps: list[ResourceStep]
    # Epoch seconds of the engine events named in `_MARKS`.
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def stages(self) -> dict[str, float]:
        """Where the update's wall time went, from the event marks (about 0.1 s resolution)."""
        points = [("started", self.started)]
        points += [(k, self.marks[k]) for k in _MARKS if k in self.marks]
        points.append(("ended", self.ended))
        return {
            _STAGES[name]: rounded(max(0.0, at - before))
            for (_, before), (name, at) in itertools.pairwise(points)
        }

    @property
    def work_seconds(self) -> float:
        """Time the providers spent on resources (they run one after the other here)."""
        return sum(s.seconds for s in self.steps if s.leaf)

    def resources_json(self) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "op": s.op, "seconds": rounded(s.seconds), **s.outputs}
            for s in self.steps
            if s.leaf
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.label,
            "seconds": rounded(self.seconds),
            "engine_seconds": rounded(self.engine_seconds),
            "resources_seconds": rounded(self.work_seconds),
            "stages": self.stages(),
            "changes": self.changes,
            "resources": self.resources_json(),
        }


class _StepLog:
    """An event hook: each changed resource's step (the engine's events arrive within about
    0.1 s) and the stage marks of one update."""

    def __init__(self) -> None:
        self.steps: list[ResourceStep] = []
        self.marks: dict[str, float] = {}
        self._begun: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, event: auto.EngineEvent) -> None:
        now = time.time()
        pre, done = event.resource_pre_event, event.res_outputs_event
        if event.prelude_event is not None:
            self.marks.setdefault("prelude", now)
        elif pre is not None:
            self.marks.setdefault("program", now)
        elif done is not None:
            self.marks["resources_done"] = now
        elif event.summary_event is not None:
            self.marks["summary"] = now
        found = pre or done
        meta = found.metadata if found is not None else None
        if meta is None or meta.op in (auto.OpType.SAME, auto.OpType.READ):
            return
        with self._lock:
            if pre is not None:
                self._begun[meta.urn] = (now, meta.op.value)
            elif meta.urn in self._begun:
                started, op = self._begun.pop(meta.urn)
                outputs = (meta.new.outputs if meta.new else None) or {}
                kept = {
                    k: float(outputs[k])
                    for k in _KEPT_OUTPUTS
                    if isinstance(outputs.get(k), int | float)
                }
                name = meta.urn.split("::")[-1]
                self.steps.append(
                    ResourceStep(
                        name, op, now - started, kept, is_leaf_resource(meta.type), started
                    )
                )


@dataclass(frozen=True)
class Call:
    """One call the driver made on its stack: `kind` is "engine" (an update or a preview),
    "config" (reading or writing the stack's config) or "reads" (outputs, state, locks)."""

    kind: str
    name: str
    started: float  # epoch seconds
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class TimedStack(Stack):
    """A `Stack` that records every update (`ups`) and every call (`calls`) it is given."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ups: list[UpRecord] = []
        self.calls: list[Call] = []

    @contextmanager
    def _timed(self, kind: str, name: str) -> Iterator[None]:
        started = time.time()
        try:
            yield
        finally:
            self.calls.append(Call(kind, name, started, time.time()))

    def up(self, *args: Any, **kwargs: Any) -> Outcome:
        label = str(super().config().get("phase", "?"))
        log = _StepLog()
        self.event_hooks.append(log)
        started = time.time()
        try:
            with self._timed("engine", "up"):
                outcome = super().up(*args, **kwargs)
        finally:
            self.event_hooks.remove(log)
        self.ups.append(
            UpRecord(
                label, started, time.time(), outcome.seconds, outcome.changes, log.steps, log.marks
            )
        )
        return outcome

    def preview(
        self, config_file: str | None = None, policy_packs: list[str] | None = None
    ) -> tuple[auto.PreviewResult, list[tuple[str, str]]]:
        with self._timed("engine", "preview"):
            return super().preview(config_file, policy_packs)

    def config(self) -> dict[str, str]:
        with self._timed("config", "config"):
            return super().config()

    def set_config(self, values: Mapping[str, str | None]) -> None:
        with self._timed("config", "set_config"):
            super().set_config(values)

    def outputs(self) -> dict[str, Any]:
        with self._timed("reads", "outputs"):
            return super().outputs()

    def evidence(self) -> StateEvidence:
        with self._timed("reads", "evidence"):
            return super().evidence()

    def wait_for_running_update(self, say: Say, timeout: float = 600) -> None:
        with self._timed("reads", "wait_for_running_update"):
            super().wait_for_running_update(say, timeout)

    def drop_pending_operations(self, say: Say) -> None:
        with self._timed("reads", "drop_pending_operations"):
            super().drop_pending_operations(say)

    def seconds_by_kind(self, start: float, end: float) -> dict[str, float]:
        """Seconds of the calls made between `start` and `end` (epoch), by kind."""
        totals = {"engine": 0.0, "config": 0.0, "reads": 0.0}
        for call in self.calls:
            if call.started >= start and call.ended <= end:
                totals[call.kind] += call.seconds
        return totals


def split_update(
    span: PhaseSpan, up: UpRecord | None, labels: Mapping[str, str]
) -> list[PhaseSpan]:
    """A `pulumi up` span cut into the resource steps named in `labels` (resource name ->
    label) and the engine's time around them, for the chart."""
    name, start, end = span
    steps = sorted(
        (s for s in (up.steps if up else []) if s.name in labels), key=lambda s: s.started
    )
    if not steps:
        return [span]
    spans: list[PhaseSpan] = []
    at = start
    for item in steps:
        begin, finish = max(at, item.started), min(end, item.ended)
        if begin - at >= MIN_ENGINE_SPAN:
            spans.append((f"{name}: engine", at, begin))
        else:  # too short to draw: the step takes it
            begin = at
        spans.append((labels[item.name], begin, finish))
        at = finish
    if end - at >= MIN_ENGINE_SPAN:
        spans.append((f"{name}: engine", at, end))
    elif spans:
        spans[-1] = (spans[-1][0], spans[-1][1], end)
    return spans
