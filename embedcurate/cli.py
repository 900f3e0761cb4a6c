"""The `embedcurate` command: one Typer app, one module per command group.

Command modules import their heavy dependencies inside the command, so `embedcurate --help`
stays fast and works without torch or prefect loaded.
"""

from __future__ import annotations

import importlib
import logging

import typer

from embedcurate.pipeline import __version__

COMMAND_MODULES = (
    "embedcurate.commands.curate",
    "embedcurate.commands.blend",
    "embedcurate.commands.shards",
    "embedcurate.commands.pairs",
    "embedcurate.commands.card",
    "embedcurate.commands.train",
    "embedcurate.commands.mine",
    "embedcurate.commands.judge",
    "embedcurate.commands.server",
    "embedcurate.commands.generate",
    "embedcurate.commands.export",
)

app = typer.Typer(
    name="embedcurate",
    help="Curate, mine and train data for generalist text-embedding models (NV-Embed recipe).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log at INFO level"),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()
