"""Test-wide settings: offline hubs, and every cache, home and scratch folder under pytest's own
temporary folder, so a run never fills a developer's caches nor leaves files behind."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from testkit.rows import make_pair_row

# Folders a library would otherwise put in the user's home or the system temp folder. They are
# always the tests' own, even when the developer's shell sets them (their real caches).
SCRATCH_ENV = {
    "EMBEDCURATE_CACHE_DIR": "embedcurate-cache",  # embeddings, LLM responses, assembled GGUF
    "PREFECT_HOME": "prefect-home",  # the ephemeral API's database and logs
    "DASK_TEMPORARY_DIRECTORY": "dask-scratch",  # LocalCluster workers' spill folders
    "RAY_TMPDIR": "ray",  # a local Ray's session folders and sockets
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache
}
FIXED_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # the 20 s default is too short on a shared CPU when a command and its workers each start
    # an ephemeral API at once
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point the scratch variables at pytest's base temporary folder before any test module
    imports prefect or dask (both read their settings at import time).

    Runs after pytest's own tmp_path plugin has configured its factory (trylast); the folders
    live beside the tests' `tmp_path`s and go with pytest's usual retention of old runs.
    """
    factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
    root = factory.mktemp("env", numbered=False)  # short: Ray puts sockets below
    for name, folder in SCRATCH_ENV.items():
        path = root / folder
        path.mkdir()
        os.environ[name] = str(path)
    os.environ.update(FIXED_ENV)


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


# Helpers the standard library starts for this process itself; each reads a pipe from it and
# exits when this process does, so they are not processes a test left behind.
STDLIB_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _ends_with_us(process: Any) -> bool:
    import psutil

    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return True  # already gone
    return any(helper in command for helper in STDLIB_HELPERS)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process a test started is still alive (and end it)."""
    import psutil

    _stop_prefect_api_servers()
    children = [p for p in psutil.Process().children(recursive=True) if not _ends_with_us(p)]
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
