"""Errors that name where the problem is: the file, the shard or the row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class EmbedCurateError(Exception):
    """Base class for errors a user can act on."""


class InputError(EmbedCurateError):
    """Bad input data: names the file and, where known, the line or row."""

    def __init__(self, path: str | Path, message: str, row: int | None = None) -> None:
        self.path = str(path)
        self.row = row
        self.reason = message
        where = f"{self.path}, line {row}" if row is not None else self.path
        super().__init__(f"{where}: {message}")


class ShardSetError(EmbedCurateError):
    """A shard set that is incomplete, corrupt or of another schema."""

    def __init__(self, shard_dir: str | Path, problems: list[str]) -> None:
        self.shard_dir = str(shard_dir)
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.shard_dir}: shard set is not valid:\n{listing}")


class ConfigError(EmbedCurateError):
    """A blend or flow configuration that does not validate."""


class BadRowPolicy:
    """What a reader does with a bad row: raise an InputError, or drop it and count the reason.

    `on_error="drop"` needs a `drop` callback (usually `StageReport.drop` bound to a source) so
    that nothing is dropped silently.
    """

    def __init__(self, on_error: str = "raise", drop: Callable[[str], None] | None = None) -> None:
        if on_error not in ("raise", "drop"):
            raise ValueError(f"on_error must be 'raise' or 'drop', not {on_error!r}")
        if on_error == "drop" and drop is None:
            raise ValueError("on_error='drop' needs a drop counter")
        self.on_error = on_error
        self._drop = drop

    def bad(self, path: str | Path, reason: str, row: int | None = None, detail: str = "") -> None:
        """Handle one bad row; `reason` is a short stable key used for counting."""
        if self.on_error == "raise":
            raise InputError(path, f"{reason}{': ' + detail if detail else ''}", row)
        assert self._drop is not None
        self._drop(reason)
