"""`embedcurate server` and `embedcurate serve`: a real Prefect server and scheduled curation."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from embedcurate.console import console, fail
from embedcurate.pipeline.errors import EmbedCurateError


def server(
    host: Annotated[
        str, typer.Option(help="interface to bind (loopback by default)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the API and UI")] = 4200,
) -> None:
    """Start a Prefect server (API and UI) for deployments and schedules; Ctrl-C stops it.

    The server replaces this process (exec), so a signal to `embedcurate server` (SIGTERM,
    SIGKILL, Ctrl-C) reaches the server itself: there is no child left to outlive us.
    """
    from embedcurate.flows import QUIET_PREFECT_ENV

    env = {**os.environ, **QUIET_PREFECT_ENV}
    console.print(
        f"Prefect server on http://{host}:{port} — in other shells: "
        f"export PREFECT_API_URL=http://{host}:{port}/api"
    )
    command = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def serve(
    blend_path: Annotated[Path, typer.Argument(help="the blend YAML file")],
    out: Annotated[Path, typer.Option("--out", help="run folder each scheduled run writes")],
    cron: Annotated[str | None, typer.Option(help='schedule, e.g. "0 3 * * *"')] = None,
    runner: Annotated[str | None, typer.Option(help="thread, dask or ray")] = None,
    address: Annotated[str | None, typer.Option(help="Dask or Ray address")] = None,
    train: Annotated[bool, typer.Option("--train", help="train after each curate run")] = False,
    name: Annotated[str | None, typer.Option(help="deployment name (default: blend name)")] = None,
) -> None:
    """Register a curate deployment on the server (PREFECT_API_URL) and run what it schedules."""
    from embedcurate.flows.deploy import serve_curate

    try:
        serve_curate(
            blend_path, out, cron=cron, runner=runner, address=address, train=train, name=name
        )
    except EmbedCurateError as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    app.command()(server)
    app.command()(serve)
