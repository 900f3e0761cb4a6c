"""`curate --runner dask|ray --address ADDR` on clusters the tests start: the sources tasks
must run on the cluster's workers, not quietly on the command's own threads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import read_shards, require_valid
from testkit.cli import run_cli
from testkit.clusters import finished_tasks, local_dask_cluster, local_ray

from .conftest import write_flow_blend

pytestmark = pytest.mark.slow
SOURCES = ("beir", "topics")  # the flow blend's sources: one task each
# every stage task of the flow blend: a sources part per source, then mine, template, card
STAGE_TASKS = len(SOURCES) + 3


def _check_run(run: Path) -> None:
    require_valid(run / "train", TableKind.TRAIN)
    for source in SOURCES:
        assert read_shards(run / "pairs" / source).num_rows > 0


def test_dask_address_runs_the_sources_on_the_clusters_workers(tmp_path: Path) -> None:
    blend = write_flow_blend(tmp_path / "data")
    run = tmp_path / "run"
    with local_dask_cluster(tmp_path / "dask") as (cluster, client):
        result = run_cli(
            "curate", str(blend), "--out", str(run),
            "--runner", "dask", "--address", cluster.scheduler_address,
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        finished = finished_tasks(client)
    assert f"Connecting to an existing Dask cluster at {cluster.scheduler_address}" in result.stderr
    stages_done = [k for keys in finished.values() for k in keys if k.startswith("stage_task-")]
    assert len(stages_done) == STAGE_TASKS, finished
    _check_run(run)


def test_ray_address_runs_the_sources_on_ray_workers(tmp_path: Path) -> None:
    blend = write_flow_blend(tmp_path / "data")
    run = tmp_path / "run"
    with local_ray(num_cpus=1) as address:
        result = run_cli(
            "curate", str(blend), "--out", str(run), "--runner", "ray", "--address", address,
            timeout=600,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Connecting to an existing Ray instance at {address}" in result.stderr
    # Ray forwards a worker's output to the driver as "(task pid=N) ..."
    for source in SOURCES:
        pattern = rf"\(sources pid=\d+\).*sources-{source}: done"
        assert re.search(pattern, result.stderr), result.stderr[-3000:]
    _check_run(run)
