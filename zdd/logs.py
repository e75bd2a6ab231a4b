"""Reading a component's log file as `zdd logs` shows it: all of it or its last lines, and
following it as it grows."""

from __future__ import annotations

import codecs
import io
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.25


def read(path: Path, lines: int | None = None) -> tuple[str, int]:
    """The log's text (its last `lines` lines if given) and the offset it was read up to."""
    with path.open("rb") as handle:
        if lines is None:
            data = handle.read()
        elif lines > 0:
            data = b"".join(deque(handle, maxlen=lines))
        else:
            data = b""
            handle.seek(0, io.SEEK_END)
        return data.decode(errors="replace"), handle.tell()


def follow(
    path: Path,
    write: Callable[[str], None],
    offset: int,
    *,
    until: Callable[[], bool] = lambda: False,
    poll: float = POLL_SECONDS,
) -> None:
    """Pass on what is appended to the log from `offset` on, until `until()` (or an interrupt).
    A log that was emptied or replaced is read again from its start; one that is gone (its
    stack destroyed) is waited for."""
    # A character may be split between two reads.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while not until():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:
            offset = 0
        if size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(size - offset)
            offset += len(data)
            write(decoder.decode(data))
            continue
        time.sleep(poll)
