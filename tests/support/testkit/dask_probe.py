"""A Dask scheduler preload for tests: which worker finished which task.

`dask.config.set({"distributed.scheduler.preload": ["testkit.dask_probe"]})` before a
`LocalCluster` starts (its scheduler lives in the test's process) and `FINISHED` fills with
(task key, worker address) pairs, so a test can tell work ran on the cluster's workers.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

FINISHED: list[tuple[str, str]] = []


class FinishedTasks(SchedulerPlugin):
    name = "embedcurate-test-finished-tasks"

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and "worker" in kwargs:
            FINISHED.append((str(key), str(kwargs["worker"])))


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(FinishedTasks())
