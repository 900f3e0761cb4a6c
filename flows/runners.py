"""Task runners by name: a thread pool on one machine, Dask or Ray across machines; and what
a flow asks of a runner's cluster (its GPUs, a GPU for a task)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
        try:
            from prefect_dask import DaskTaskRunner
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "the dask runner needs the dist extra: pip install 'embedcurate[dist]'"
            ) from exc
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


def runner_kind(task_runner: Any) -> str:
    """`dask`, `ray` or `thread` (any other runner runs tasks in this process's threads)."""
    module = type(task_runner).__module__
    if module.startswith("prefect_dask"):
        return "dask"
    if module.startswith("prefect_ray"):
        return "ray"
    return "thread"


def cluster_gpus(task_runner: Any) -> int:
    """GPUs the runner's cluster declares: the `GPU` resource of the Dask workers (declared
    with `dask worker --resources GPU=1`), or of the Ray cluster (detected by Ray)."""
    kind = runner_kind(task_runner)
    if kind == "dask":
        workers = task_runner.client.scheduler_info(n_workers=-1)["workers"].values()
        return int(sum(w.get("resources", {}).get("GPU", 0) for w in workers))
    if kind == "ray":
        import ray

        return int(ray.cluster_resources().get("GPU", 0))
    return 0


def missing_gpus_hint(task_runner: Any) -> str:
    """What the cluster lacks and how to give it, for an error when it declares no GPU."""
    if runner_kind(task_runner) == "dask":
        return (
            "no worker of the Dask cluster declares a GPU resource: start one worker per GPU "
            "with `--resources GPU=1` and that GPU alone visible (as `dask cuda worker` does), "
            "or set teacher.device: cpu"
        )
    return (
        "the Ray cluster has no GPU (ray.cluster_resources() lists none): start Ray on "
        "machines with GPUs (`ray start --num-gpus N`), or set teacher.device: cpu"
    )


@contextlib.contextmanager
def gpu_request(task_runner: Any) -> Iterator[None]:
    """Tasks submitted inside take one GPU each: a worker runs as many at once as it has
    GPUs (Dask resource annotation; Ray `num_gpus`, which also makes only that GPU visible)."""
    kind = runner_kind(task_runner)
    if kind == "dask":
        import dask

        with dask.annotate(resources={"GPU": 1}):
            yield
    elif kind == "ray":
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=1):
            yield
    else:
        yield
