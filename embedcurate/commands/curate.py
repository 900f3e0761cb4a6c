"""`embedcurate curate BLEND.yaml --out DIR`: the main job, run as a Prefect flow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import load_blend
from embedcurate.pipeline.errors import EmbedCurateError


def curate(
    blend_path: Annotated[Path, typer.Argument(help="the blend YAML file")],
    out: Annotated[Path, typer.Option("--out", help="run folder for every stage's output")],
    runner: Annotated[
        str | None, typer.Option(help="task runner: thread, dask or ray (default: the blend's)")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Dask scheduler or Ray cluster address")
    ] = None,
    train: Annotated[bool, typer.Option("--train", help="train on the shards when done")] = False,
) -> None:
    """Curate a blend into train shards with a data card."""
    try:
        blend = load_blend(blend_path)
    except EmbedCurateError as exc:
        fail(str(exc))
    if blend.requires:
        console.print(f"[yellow]this blend needs:[/] {', '.join(blend.requires)}")
    from embedcurate.flows.curate import curate_flow

    try:
        summary = curate_flow(
            str(blend_path), str(out), runner=runner, address=address, train=train
        )
    except EmbedCurateError as exc:
        fail(str(exc))
    print_summary(Path(summary["run_dir"]), summary)


def print_summary(run_dir: Path, summary: dict) -> None:
    from embedcurate.flows.artifacts import stage_count_rows
    from embedcurate.pipeline.manifest import read_manifest

    table = Table(title=f"curate run {run_dir}")
    columns = ("stage", "output", "source", "in", "kept", "dropped", "rows", "top reasons")
    for column in columns:
        numeric = column in ("in", "kept", "dropped", "rows")
        table.add_column(column, justify="right" if numeric else "left")
    for row in stage_count_rows(run_dir):
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
    manifest = read_manifest(summary["train_dir"])
    console.print(
        f"[green]train shards:[/] {summary['train_dir']} ({manifest.num_rows} rows, "
        f"{len(manifest.shards)} shard(s))\n[green]data card:[/] {summary['card']}"
    )
    if "model_dir" in summary:
        console.print(f"[green]trained model:[/] {summary['model_dir']}")


def register(app: typer.Typer) -> None:
    app.command()(curate)
