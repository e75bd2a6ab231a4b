"""`python -m zdd.supervise -- ARGV...`: run a process, and start it again if it dies.

A site process that crashes while it holds the public traffic (a clone during the read-only
window has no other server to stand in for it) is back within about a second, as a service
manager would bring it back; the front door's connection retries bridge the gap. A process that
dies again and again right after its start is a broken release, not a crash: the supervisor then
gives up with the process's own exit code, so the start fails with its log.

SIGTERM (a stop by the provider) is passed on, and the supervisor ends when the process does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

# A process that ends within this many seconds of its start did not come up.
QUICK_EXIT_SECONDS = 10.0
# That many quick ends in a row: give up.
QUICK_EXITS_ALLOWED = 3
RESTART_DELAY_SECONDS = 0.2


def supervise(argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quick_exits = 0
    while True:
        started = time.monotonic()
        try:
            child = subprocess.Popen(argv)
        except OSError as exc:
            print(f"supervise: cannot run {argv[0]}: {exc}", flush=True)
            return 127
        code = child.wait()
        if stopping:
            return code
        quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT_SECONDS else 1
        if quick_exits >= QUICK_EXITS_ALLOWED:
            print(f"supervise: {argv[0]} ended {quick_exits} times just after starting", flush=True)
            return code or 1
        print(f"supervise: {argv[0]} ended ({code}); starting it again", flush=True)
        time.sleep(RESTART_DELAY_SECONDS)


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m zdd.supervise -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    return supervise(argv)


if __name__ == "__main__":
    sys.exit(main())
