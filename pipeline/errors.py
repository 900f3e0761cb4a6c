"""Errors that name where the problem is: the file, the shard or the row."""

from __future__ import annotations

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
