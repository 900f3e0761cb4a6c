"""Run the `embedcurate` command the way a user does: a subprocess, from the repo root."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def data_limit(gib: float) -> Callable[[], None]:
    """A child's heap (RLIMIT_DATA) capped at `gib`: a command that would take a shared
    machine's memory fails with MemoryError instead of waking the OOM killer."""
    limit = int(gib * 2**30)
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def run_cli(
    *args: str, timeout: float = 300, memory_gib: float | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m embedcurate ARGS` with a wide, colourless terminal; `env` adds variables;
    `memory_gib` caps the command's heap."""
    return subprocess.run(
        [sys.executable, "-m", "embedcurate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env},
        timeout=timeout,
        preexec_fn=data_limit(memory_gib) if memory_gib else None,
    )
