"""`embedcurate validate DIR`: check a shard set against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedcurate.console import console, fail
from embedcurate.pipeline.shards import read_manifest, validate_shards


def validate(
    shard_dir: Annotated[Path, typer.Argument(help="folder holding manifest.json and shards")],
    kind: Annotated[str | None, typer.Option(help="expected table: pairs, mined or train")] = None,
) -> None:
    """Check every shard against manifest.json; exit 1 naming each problem."""
    problems = validate_shards(shard_dir, kind)
    if problems:
        fail(f"{shard_dir}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))
    manifest = read_manifest(shard_dir)
    console.print(
        f"[green]valid[/] {shard_dir}: {manifest.kind} table, {manifest.num_rows} rows in "
        f"{len(manifest.shards)} shard(s), schema {manifest.schema_fingerprint}, "
        f"config {manifest.config_hash[:12]}"
    )


def register(app: typer.Typer) -> None:
    app.command()(validate)
