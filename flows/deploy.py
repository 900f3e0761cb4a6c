"""Deployments: register the curate flow with a schedule on a running Prefect server."""

from __future__ import annotations

import os
from pathlib import Path

from prefect.deployments.runner import EntrypointType

from embedcurate.flows.curate import curate_flow
from embedcurate.pipeline.blend import load_blend
from embedcurate.pipeline.errors import ConfigError


def require_server() -> str:
    """Deployments live on a server; the ephemeral API disappears with the process."""
    api_url = os.environ.get("PREFECT_API_URL", "")
    if not api_url:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value() or ""
    if not api_url:
        raise ConfigError(
            "no Prefect server: start one with `embedcurate server` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return api_url


def serve_curate(
    blend_path: str | Path,
    out_dir: str | Path,
    *,
    cron: str | None = None,
    runner: str | None = None,
    address: str | None = None,
    train: bool = False,
    name: str | None = None,
    limit: int = 1,
) -> None:
    """Register a deployment of the curate flow for this blend and execute its runs.

    Blocks, like `prefect`'s own serve: the process polls the server and runs what is
    scheduled (the cron schedule) or triggered by hand, one run at a time by default.
    """
    require_server()
    blend = load_blend(blend_path)
    curate_flow.serve(
        name=name or blend.name,
        cron=cron,
        parameters={
            "blend_path": str(Path(blend_path).resolve()),
            "out_dir": str(Path(out_dir).resolve()),
            "runner": runner,
            "address": address,
            "train": train,
        },
        tags=["embedcurate", f"blend:{blend.name}"],
        description=blend.description or f"curate blend {blend.name}",
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
