"""Test-wide settings: offline hubs, a throwaway Prefect home, and small row factories."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

from testkit.rows import make_pair_row

_PREFECT_HOME = tempfile.mkdtemp(prefix="embedcurate-prefect-")
# the teacher's embedding cache: never the user's ~/.cache from a test
os.environ.setdefault("EMBEDCURATE_CACHE_DIR", tempfile.mkdtemp(prefix="embedcurate-cache-"))
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def pair_rows() -> Callable[[int], list[dict[str, Any]]]:
    return lambda n: [make_pair_row(i) for i in range(n)]


def _stop_prefect_api_servers() -> None:
    """Stop the ephemeral Prefect API this process started (Prefect would at exit, too late for
    the check below); a no-op when no test ran a flow here."""
    module = sys.modules.get("prefect.server.api.server")
    if module is not None:
        for server in list(module.SubprocessASGIServer._instances.values()):
            server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process a test started is still alive (and end it)."""
    import psutil

    _stop_prefect_api_servers()
    children = psutil.Process().children(recursive=True)
    _gone, alive = psutil.wait_procs(children, timeout=10)
    if not alive:
        return
    described = []
    for process in alive:
        with contextlib.suppress(psutil.Error):
            described.append(f"pid {process.pid}: {' '.join(process.cmdline())[:200]}")
            process.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "processes started by the tests are still running:\n  " + "\n  ".join(described)
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
