"""A Dask worker plugin for tests: teachers that fail on the cluster, and a log of what the
teachers encoded.

`client.register_plugin(FailingEncode(log_path, flags_dir, {2: "raise", 4: "kill"}))` patches
the Hugging Face teacher in every worker process: each call that succeeds appends its number of
texts and the worker's process id to `log_path`; the first call made once 2 calls succeeded on
the cluster raises, and the first made once 4 did kills its worker process on the spot (as a
lost machine would). Each fault
happens once, whichever worker meets it: it claims a flag file in `flags_dir` first.
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


class FailingEncode(WorkerPlugin):
    name = "embedcurate-test-failing-encode"

    def __init__(self, log_path: Path, flags_dir: Path, faults: dict[int, Fault]) -> None:
        self.log_path = log_path
        self.flags_dir = flags_dir
        self.faults = faults

    def fault_due(self) -> Fault | None:
        done = _calls_done(self.log_path)
        for after, fault in sorted(self.faults.items()):
            if done >= after and _claim(self.flags_dir / f"{fault}-after-{after}"):
                return fault
        return None

    def setup(self, worker: Any) -> None:
        from embedcurate.pipeline.mining.teacher import HFTeacher

        real_encode = HFTeacher.encode
        plugin = self

        def encode(teacher: HFTeacher, texts: Any, progress: bool = False) -> Any:
            fault = plugin.fault_due()
            if fault == "kill":
                os._exit(1)
            if fault == "raise":
                raise RuntimeError("encode failed on purpose (testkit.dask_faults)")
            embeddings = real_encode(teacher, texts, progress)
            with open(plugin.log_path, "a") as log:
                log.write(f"{len(texts)} {os.getpid()}\n")
            return embeddings

        HFTeacher.encode = encode  # type: ignore[method-assign]
