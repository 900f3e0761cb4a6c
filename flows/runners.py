"""Task runners by name: a thread pool on one machine, Dask or Ray across machines."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

RUNNERS = ("thread", "dask", "ray")


def make_task_runner(kind: str = "thread", address: str | None = None, max_workers: int = 4) -> Any:
    """Build the runner; `address` points Dask or Ray at an existing cluster.

    Without an address, Dask starts a `distributed.LocalCluster` (one process per worker,
    one thread each) and Ray a local instance, so the same blend scales out by naming an
    address and nothing else.
    """
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": max_workers, "threads_per_worker": 1, "processes": True}
        )
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "the ray runner needs the dist extra: pip install 'embedcurate[dist]'"
            ) from exc
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise ValueError(f"unknown task runner {kind!r}; choose one of {', '.join(RUNNERS)}")
