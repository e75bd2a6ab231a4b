"""The benchmark's stacks: fresh local stacks of the sample site, and what their outputs say."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zdd import appspec, health
from zdd.appspec import AppSpec
from zdd.bench.engine import TimedStack
from zdd.bench.load import say
from zdd.driver import Driver
from zdd.environment import SAMPLE_FROM_VERSION, SAMPLE_TO_VERSION, Environment
from zdd.phases import DatabaseMode, Instance
from zdd.probe import ProbeTarget
from zdd.stack import Stack
from zdd.targets import ops_for

FROM_VERSION, TO_VERSION = SAMPLE_FROM_VERSION, SAMPLE_TO_VERSION
TARGET = "local"


@dataclass
class BenchSite:
    """A stack of the sample site, its driver, and the instrumented stack the driver uses."""

    env: Environment
    name: str
    driver: Driver
    stack: TimedStack

    def output(self, key: str) -> str:
        return str(self.stack.outputs()[key])

    @property
    def folder(self) -> Path:
        """The stack's own folder, where its databases live (scratch files go there too)."""
        return self.env.stack_dir(self.name)

    @property
    def primary_database(self) -> Path:
        return self.folder / self.output("primary_database")

    @property
    def app(self) -> AppSpec:
        spec = appspec.from_config(self.stack.config())
        if spec is None:
            raise RuntimeError(f"stack {self.name} has no app spec")
        return spec

    @property
    def probe_target(self) -> ProbeTarget:
        return ProbeTarget.of(self.app)

    def verify_public(self, version: str) -> None:
        """The public endpoint answers healthy from the primary on `version`."""
        health.wait_healthy(
            self.output("public_url"),
            health.Identity(version, Instance.PRIMARY, DatabaseMode.READ_WRITE),
            what=f"the site on {version}",
            health_path=self.app.health.path,
        )


def destroy(env: Environment, name: str) -> None:
    """Destroy the stack; an interrupted update's lock is cleared first if it is in the way. The
    target forgets the stack's folder and processes either way."""
    try:
        if Stack.exists(env, name):
            driver = Driver(env, name, say)
            try:
                driver.destroy()
            except Exception as exc:
                say(f"destroy of {name} failed ({exc}); clearing the lock and retrying")
                driver.clear_interrupted_update()
                Driver(env, name, say).destroy()
    finally:
        ops_for(TARGET).forget(env, name)


@contextmanager
def fresh_stack(env: Environment, label: str) -> Iterator[BenchSite]:
    """A new local stack of the sample site on `FROM_VERSION`, idle; destroyed on the way out."""
    name = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    say(f"{name}: init at {FROM_VERSION}")
    try:
        Driver(env, name, say).init(TARGET, FROM_VERSION)
        stack = TimedStack.select(env, name)
        yield BenchSite(env, name, Driver(env, name, say, stack=stack), stack)
    finally:
        say(f"{name}: destroy")
        destroy(env, name)
