"""What the dynamic providers of every target share in their `diff`: which inputs changed, and
a resource that is made again when one that binds it changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi.dynamic import DiffResult


def changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if olds.get(k) != news.get(k)]


def replaced_when_changed(
    olds: Mapping[str, Any], news: Mapping[str, Any], keys: Iterable[str]
) -> DiffResult:
    """Nothing to do unless one of `keys` changed; then the resource is made again."""
    replaces = changed(olds, news, keys)
    return DiffResult(changes=bool(replaces), replaces=replaces)
