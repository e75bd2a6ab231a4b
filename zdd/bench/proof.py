"""What proving data costs beside copying it: at a size like a real site's (1 GiB by default,
`BENCH_PROOF_MB`), the clone's copy, a restore point's proof and the read-only check of a
clone before it is destroyed, each timed on the same database."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zdd.bench.database import grow_database
from zdd.bench.metrics import MIB, rounded, throughput_mb_s, timed_summary
from zdd.console import Say
from zdd.sqlite_files import (
    content_digest,
    copy_site_data,
    data_digest,
    files_folder,
    make_read_only,
    remove_site_data,
)

REPEATS = 3


def figures(size_mb: float, say: Say, repeats: int = REPEATS) -> dict[str, Any]:
    """Median seconds of the copy (`copy_site_data`: online backup plus the files folder), the
    proof (`data_digest` of the copy: what a restore point records and a rollback checks) and
    the row-by-row `content_digest` the proof replaced, on a database of `size_mb` MiB."""
    with tempfile.TemporaryDirectory(prefix="zdd-bench-proof-") as folder:
        primary = Path(folder) / "primary.sqlite"
        say(f"proof at {size_mb:g} MiB: growing a database")
        size = grow_database(primary, size_mb)
        files_folder(primary).mkdir()
        (files_folder(primary) / "upload.bin").write_bytes(b"\0" * MIB)
        copy = Path(folder) / "copy.sqlite"
        times: dict[str, list[float]] = {"copy": [], "proof": [], "check": [], "rows": []}
        for _ in range(repeats):
            remove_site_data(copy)
            times["copy"].append(_timed(lambda: copy_site_data(primary, copy)))
            make_read_only(copy)
            times["proof"].append(_timed(lambda: data_digest(copy)))
            # Before a read-only clone is destroyed: its digest again, to compare with the proof.
            times["check"].append(_timed(lambda: data_digest(copy)))
        # Once: row by row through Python, it costs many times the others.
        times["rows"].append(_timed(lambda: content_digest(copy)))
        remove_site_data(copy)
    median, figures = timed_summary(
        times,
        {
            "copy": "copy_seconds",
            "proof": "proof_seconds",
            "check": "check_seconds",
            "rows": "row_by_row_digest_seconds",
        },
    )
    say(
        f"proof at {size_mb:g} MiB: copy {median['copy']:.2f}s, proof {median['proof']:.2f}s, "
        f"check {median['check']:.2f}s, row by row {median['rows']:.2f}s"
    )
    return {
        "size_mb": size_mb,
        "bytes": size,
        **figures,
        "copy_mb_per_s": throughput_mb_s(size, median["copy"]),
        "proof_mb_per_s": throughput_mb_s(size, median["proof"]),
        "proof_over_copy": rounded(median["proof"] / median["copy"]),
    }


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
