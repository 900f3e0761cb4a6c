"""`embedcurate curate BLEND.yaml --out DIR`: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedcurate.console import console, fail
from pipeline.blend import load_blend
from pipeline.errors import ConfigError
from pipeline.plan import stage_status


def curate(
    blend_path: Annotated[Path, typer.Argument(help="the blend YAML file")],
    out: Annotated[Path, typer.Option("--out", help="run folder for every stage's output")],
) -> None:
    """Curate a blend into train shards with a data card."""
    try:
        blend = load_blend(blend_path)
    except ConfigError as exc:
        fail(str(exc))
    statuses = stage_status()
    table = Table(title=f"curate {blend.name} -> {out}")
    table.add_column("stage")
    table.add_column("what it does")
    table.add_column("status")
    for spec, implemented in statuses:
        table.add_row(spec.name, spec.purpose, "ready" if implemented else "[yellow]missing[/]")
    console.print(table)
    missing = [spec.name for spec, implemented in statuses if not implemented]
    if missing:
        console.print(
            f"[yellow]Not run:[/] this build lacks the stage(s) {', '.join(missing)}; "
            "nothing was written. The blend validated."
        )
        return
    from flows.curate import run_curate_from_cli  # prefect loads only when every stage exists

    run_curate_from_cli(blend_path, out)


def register(app: typer.Typer) -> None:
    app.command()(curate)
