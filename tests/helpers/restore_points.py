"""Changes to a PostgreSQL restore point on disk, as a tool or a person could make them."""

from __future__ import annotations

from pathlib import Path


def flip_bytes_of_a_table(point: Path) -> None:
    """Change bytes of the largest relation file of the restore point's backup, keeping its size
    (what the manifest's sizes cannot see), its read-only mark undone first."""
    files = (path for path in (point / "data" / "base").rglob("*") if path.is_file())
    largest = max(files, key=lambda path: path.stat().st_size)
    largest.chmod(0o600)
    with open(largest, "r+b") as handle:
        handle.seek(100)
        old = handle.read(4)
        handle.seek(100)
        handle.write(bytes(b ^ 0xFF for b in old))


def append(path: Path, text: str) -> None:
    """Append to a file of a read-only restore point (or add one), as a tool that rewrites it
    would."""
    path.parent.chmod(0o700)
    if path.exists():
        path.chmod(0o600)
    with open(path, "a") as handle:
        handle.write(text)
