from __future__ import annotations

import sys

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from embedcurate.flows.runners import make_task_runner


def test_thread_runner_is_the_default() -> None:
    runner = make_task_runner()
    assert isinstance(runner, ThreadPoolTaskRunner)


def test_dask_runner_starts_a_local_cluster_or_uses_an_address() -> None:
    from prefect_dask import DaskTaskRunner

    local = make_task_runner("dask", max_workers=2)
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs["n_workers"] == 2
    remote = make_task_runner("dask", address="tcp://127.0.0.1:8786")
    assert remote.address == "tcp://127.0.0.1:8786"


def test_unknown_runner_names_the_choices() -> None:
    with pytest.raises(ValueError, match="thread, dask, ray"):
        make_task_runner("spark")


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_a_runner_not_installed_names_the_extra(kind: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, f"prefect_{kind}", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=rf"the {kind} runner needs the dist extra"):
        make_task_runner(kind)


def test_ray_tasks_submitted_under_a_gpu_request_ask_ray_for_one() -> None:
    from prefect_ray.context import RemoteOptionsContext

    from embedcurate.flows.runners import gpu_request

    runner = make_task_runner("ray")  # not started: no Ray instance needed
    with gpu_request(runner):
        assert RemoteOptionsContext.get().current_remote_options == {"num_gpus": 1}
    assert not RemoteOptionsContext.get().current_remote_options
