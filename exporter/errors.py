"""Error types shared by sources and collectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SourceError(Exception):
    """A source could not be read; ``kind`` is a short, bounded label (connect, query, timeout)."""

    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class Degraded(SourceError):
    """A refresh that produced metrics but hit a failure on the way: serve them, report failure."""

    def __init__(self, message: str, families: Sequence[Any], *, kind: str = "partial") -> None:
        super().__init__(message, kind=kind)
        self.families = families
