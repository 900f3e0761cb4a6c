"""Local clusters for tests: Dask worker processes of one thread each (scratch in the test's
folder) and what each worker finished, read from its task log; a local Ray, shut down after,
and which of its worker processes ran a task, read from their log files."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def local_dask_cluster(scratch: Path, workers: int = 2) -> Iterator[tuple[Any, Any]]:
    """(cluster, client) of `workers` processes x 1 thread; both closed on exit."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=scratch,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def finished_tasks(client: Any) -> dict[str, list[str]]:
    """Each worker's finished task keys (prefect-dask names a key after its task)."""
    return client.run(
        lambda dask_worker: [
            str(key) for key, _, end, *_ in dask_worker.state.log if end == "memory"
        ]
    )


@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[str]:
    """A local Ray of `num_cpus` CPUs and no GPU, its sessions under $RAY_TMPDIR (the tests'
    own); yields the address clients connect to, and shuts Ray down on exit."""
    import ray

    ray.init(
        num_cpus=num_cpus,
        num_gpus=0,
        object_store_memory=200_000_000,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=os.environ["RAY_TMPDIR"],
        configure_logging=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def ray_task_pids(task_name: str) -> set[int]:
    """Process ids of the Ray workers whose logs show a Prefect task run named `task_name`
    finishing (`Task run '<task_name>-xyz' - Finished ...`). Read from the workers' own log
    files (`worker-<id>-<job>-<pid>.err` in the sessions under $RAY_TMPDIR), not from what Ray
    forwards to the driver, which it does asynchronously and may not have done by the time a
    short flow ends."""
    pattern = re.compile(rf"Task run '{re.escape(task_name)}-[^']*' - Finished")
    pids = set()
    for log in Path(os.environ["RAY_TMPDIR"]).glob("session_*/logs/worker-*.*"):
        if pattern.search(log.read_text(errors="replace")):
            pids.add(int(log.stem.rsplit("-", 1)[1]))
    return pids
