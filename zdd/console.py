"""The console `zdd` and `make chaos` print on: a path or a command is never broken over two
lines, and a table keeps the width it needs when the output is not a terminal."""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.console import Console

# Where a long step tells the operator how it is going: a line at a time, in the user's words.
Say = Callable[[str], None]

# Without a terminal to ask, Rich lays everything out for 80 columns: `make chaos`'s table was
# squeezed to three letters a column and a long path was split over two lines. Piped output (a
# CI log, a file, a test) has no width of its own; what is printed decides, up to this.
PIPED_WIDTH = 1_000


def stderr_console() -> Console:
    """Standard error, where progress, tables and errors go (standard output keeps `--json`).

    Text is never wrapped by Rich (a terminal folds a long line for the eye, but it stays one
    line to copy); a `COLUMNS` set by the user still wins for the width of tables."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console
