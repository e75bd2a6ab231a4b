"""Local ports for a test that places a stack itself: chosen as `zdd init` chooses them, so that
tests running side by side (`pytest -n`) never count on a fixed port being free."""

from __future__ import annotations

import random

from tests.helpers.commands import ROOT
from zdd import processes
from zdd.environment import STATE_ROOT, ports_dir
from zdd.phases import PORTS_PER_STACK


def free_port_block(size: int = PORTS_PER_STACK) -> int:
    """A base port with `size` ports after it that nothing listens on and no stack holds."""
    registry = ports_dir(ROOT / STATE_ROOT)
    bases = processes.server_ports(step=10)
    for _ in range(200):
        base = random.choice(bases)
        ports = range(base, base + size)
        if not any((registry / str(p)).exists() or processes.port_in_use(p) for p in ports):
            return base
    raise AssertionError("no block of free local ports")
