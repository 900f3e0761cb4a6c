"""Work a stage spreads over a Dask or Ray runner's workers: plan folders of part files, and
what a task asks its worker (`worker_threads`).

A stage with a `FanOut` (`pipeline.stages`) plans its heavy work in one task, as part files in
a folder every worker reaches (the stage's cache: the embedding cache for mining, the
response cache's folder for generation), and tasks pass part paths, never the work itself.
The folder of one stage output's plans is `<plans>/<plan_name(out_dir)>`; the stage removes
it once it has read what the parts produced.

A plan, once written, never changes: parts are written into a staging folder that is
renamed, last, to a digest of their content. A planner that runs again while parts of the
first plan are still running (Dask recomputes a result a dead worker held) writes the same
folder or, once some work is done, another one; a part task never reads a part other than
the one it was given.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from embedcurate.pipeline.atomic import move_folder_into_place, temp_path_for

PLANS_DIR = "plans"


def plan_name(out_dir: Path) -> str:
    """The folder name of one stage output's plans (a digest of its resolved path)."""
    return hashlib.blake2b(str(Path(out_dir).resolve()).encode(), digest_size=8).hexdigest()


class PlanWriter:
    """Write part files into a staging folder, then `commit` them under their digest.

    `add(write, content, suffix)` writes part number N as `part-NNNNN<suffix>` with `write`
    and feeds `content` (bytes that identify the part's work) into the plan's digest.
    """

    def __init__(self, plans: Path) -> None:
        self.plans = plans
        self.staging = temp_path_for(plans / "plan")
        shutil.rmtree(self.staging, ignore_errors=True)  # what a planner killed here left
        self._digest = hashlib.blake2b(digest_size=8)
        self._names: list[str] = []

    def add(self, write: Callable[[Path], None], content: bytes, suffix: str) -> None:
        name = f"part-{len(self._names):05d}{suffix}"
        self.staging.mkdir(parents=True, exist_ok=True)
        write(self.staging / name)
        self._digest.update(len(content).to_bytes(8, "little") + content)
        self._names.append(name)

    def commit(self) -> list[Path]:
        """Rename the staging folder to the plan's digest; the parts' final paths, in order."""
        final = self.plans / self._digest.hexdigest()
        if self._names:  # another planner may have renamed the same plan first
            move_folder_into_place(self.staging, final)
        return [final / name for name in self._names]


def worker_threads() -> int | None:
    """The CPU threads this task holds on its worker (a Dask worker's threads, Ray's CPU
    assignment); None outside a worker."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):
        pass
    try:
        import ray
    except ImportError:
        return None
    if ray.is_initialized():
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            return max(1, int(cpus))
    return None
