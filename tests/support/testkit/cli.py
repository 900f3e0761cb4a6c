"""Run the `embedcurate` command the way a user does: a subprocess, from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m embedcurate ARGS` with a wide, colourless terminal; `env` adds variables."""
    return subprocess.run(
        [sys.executable, "-m", "embedcurate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env},
        timeout=timeout,
    )
