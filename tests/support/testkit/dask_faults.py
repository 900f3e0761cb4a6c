"""Dask worker plugins for tests: teachers or response caches that fail on the cluster, and a
log of the calls that succeeded.

`client.register_plugin(FailingEncode(log_path, flags_dir, {2: "raise", 4: "kill"}))` patches
the Hugging Face teacher in every worker process: each call that succeeds appends its number of
texts and the worker's process id to `log_path`; the first call made once 2 calls succeeded on
the cluster raises, and the first made once 4 did kills its worker process on the spot (as a
lost machine would). Each fault
happens once, whichever worker meets it: it claims a flag file in `flags_dir` first.
`FailingResponseCommit` does the same to the generation response cache's commits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from distributed.diagnostics.plugin import WorkerPlugin

Fault = Literal["raise", "kill"]


def _claim(flag_path: Path) -> bool:
    """True for the one caller that creates the flag file (atomic across processes)."""
    try:
        os.close(os.open(flag_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _calls_done(log_path: Path) -> int:
    return len(log_path.read_text().splitlines()) if log_path.exists() else 0


class FailingCalls(WorkerPlugin):
    """Patches `method_name` of the class `patched()` returns in every worker process; each
    call that succeeds logs `size(args)` and the worker's process id."""

    name = "embedcurate-test-failing-calls"
    method_name = ""

    def __init__(self, log_path: Path, flags_dir: Path, faults: dict[int, Fault]) -> None:
        self.log_path = log_path
        self.flags_dir = flags_dir
        self.faults = faults

    @staticmethod
    def patched() -> type:
        raise NotImplementedError

    @staticmethod
    def size(args: tuple[Any, ...]) -> int:
        return 1

    def fault_due(self) -> Fault | None:
        done = _calls_done(self.log_path)
        for after, fault in sorted(self.faults.items()):
            if done >= after and _claim(self.flags_dir / f"{fault}-after-{after}"):
                return fault
        return None

    def setup(self, worker: Any) -> None:
        owner = self.patched()
        real = getattr(owner, self.method_name)
        plugin = self

        def failing(*args: Any, **kwargs: Any) -> Any:
            fault = plugin.fault_due()
            if fault == "kill":
                os._exit(1)
            if fault == "raise":
                raise RuntimeError(f"{plugin.method_name} failed on purpose (testkit.dask_faults)")
            result = real(*args, **kwargs)
            with open(plugin.log_path, "a") as log:
                log.write(f"{plugin.size(args)} {os.getpid()}\n")
            return result

        setattr(owner, self.method_name, failing)


class FailingEncode(FailingCalls):
    """The Hugging Face teacher's `encode`; the log counts the texts of each call."""

    name = "embedcurate-test-failing-encode"
    method_name = "encode"

    @staticmethod
    def patched() -> type:
        from embedcurate.pipeline.mining.teacher import HFTeacher

        return HFTeacher

    @staticmethod
    def size(args: tuple[Any, ...]) -> int:
        return len(args[1])  # (teacher, texts, ...)


class FailingResponseCommit(FailingCalls):
    """The response cache's `put`: a kill loses the response in hand and any still in flight,
    never one already committed."""

    name = "embedcurate-test-failing-response-commit"
    method_name = "put"

    @staticmethod
    def patched() -> type:
        from embedcurate.pipeline.generation.cache import ResponseCache

        return ResponseCache
