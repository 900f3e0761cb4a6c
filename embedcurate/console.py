"""Shared rich console and the one way commands report a user error and exit."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_train_shards(num_rows: int, train_dir: Path) -> None:
    """The closing line of a command that re-rendered the train shards and their card."""
    console.print(f"[green]train shards:[/] {num_rows} rows in {train_dir} (data card: README.md)")
