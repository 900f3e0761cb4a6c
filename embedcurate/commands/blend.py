"""`embedcurate blend check BLEND.yaml`: validate a blend and print its resolved config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import load_blend
from embedcurate.pipeline.errors import ConfigError

blend_app = typer.Typer(help="Work with blend files.", no_args_is_help=True)


@blend_app.command("check")
def check(blend_path: Annotated[Path, typer.Argument(help="the blend YAML file")]) -> None:
    """Validate a blend; print the resolved config (defaults filled in, paths absolute)."""
    try:
        blend = load_blend(blend_path)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"[green]valid[/] blend [bold]{blend.name}[/] ({blend_path})")
    if blend.requires:
        console.print(f"[yellow]needs:[/] {', '.join(blend.requires)}")
    console.print(yaml.safe_dump(blend.resolved(), sort_keys=False), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(blend_app, name="blend")
