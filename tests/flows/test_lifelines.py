"""Nothing we start outlives us: SIGKILL of a flow process, SIGTERM of `embedcurate server`;
and nothing phones home or leaks a key into Prefect's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from testkit.llm_servers import ScriptedServer, free_port, wait_until

from .conftest import write_flow_blend

REPO = Path(__file__).resolve().parents[2]
PLANTED_KEY = "zq7PLANTEDkey0490xyzVALUE"  # no known shape: only value redaction catches it


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), **extra}
    for name in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_API_URL"):
        env.pop(name, None)  # what a user's shell has: nothing set up for us
    return env


def _uvicorn_children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "uvicorn" in " ".join(c.cmdline())]


def _all_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    _gone, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return alive


def _sigkill_then_expect_none_left(
    proc: subprocess.Popen[bytes], descendants: list[psutil.Process]
) -> None:
    """SIGKILL the process (no handler runs) and require every descendant it had to be gone."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = _all_gone(descendants, timeout_s=30)
    assert not alive, [" ".join(p.cmdline()) for p in alive]


@pytest.mark.slow
def test_sigkill_of_curate_mid_run_leaves_no_process(tmp_path: Path) -> None:
    blend = write_flow_blend(tmp_path / "data", num_docs=400)
    command = [
        sys.executable,
        "-m",
        "embedcurate",
        "curate",
        str(blend),
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.Popen(
        command, cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    parent = psutil.Process(proc.pid)
    try:
        assert wait_until(lambda: bool(_uvicorn_children(parent)), timeout_s=240), (
            "curate never started its Prefect API"
        )
        assert wait_until(lambda: (tmp_path / "run" / "pairs").exists(), timeout_s=240)
        descendants = parent.children(recursive=True)
        assert proc.poll() is None, "curate finished before the kill"
        _sigkill_then_expect_none_left(proc, descendants)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert "telemetry" not in stderr.lower(), stderr[-3000:]
    assert "database is locked" not in stderr, stderr[-3000:]


def test_a_flow_process_killed_with_sigkill_takes_its_prefect_api_along(tmp_path: Path) -> None:
    started = tmp_path / "started"
    script = tmp_path / "flow.py"
    script.write_text(
        "import sys, time\n"
        "import embedcurate.flows\n"
        "from pathlib import Path\n"
        "from prefect import flow\n"
        "@flow\n"
        "def wait_here():\n"
        f"    Path({str(started)!r}).write_text('yes')\n"
        "    time.sleep(120)\n"
        "wait_here()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)
    try:
        assert wait_until(started.exists, timeout_s=180), "the flow never started"
        descendants = parent.children(recursive=True)
        assert _uvicorn_children(parent), "no ephemeral Prefect API under the flow process"
        _sigkill_then_expect_none_left(proc, descendants)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigterm_to_embedcurate_server_stops_the_prefect_server(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedcurate", "server", "--port", str(port)],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    health = f"http://127.0.0.1:{port}/api/health"

    def healthy() -> bool:
        try:
            return httpx.get(health, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(healthy, timeout_s=180), "the server never answered"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        alive = _all_gone(descendants, timeout_s=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert not healthy()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert "telemetry" not in stderr.lower(), stderr[-3000:]


@pytest.mark.slow
def test_a_key_echoed_by_the_llm_server_is_nowhere_in_curate_output_or_prefect(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as server:
        server.fail_when("Area:", "http_401_echo")
        generator = f"""generator:
  backend: openai
  base_url: {server.base_url}
  model: scripted-llm
  model_kind: base
  api_key_env: LLM_GATEWAY
  num_tasks: 2
  examples_per_task: 2
  cache_dir: {tmp_path / "llm-cache"}
"""
        blend = write_flow_blend(tmp_path / "data", extra=generator)
        env = _env(tmp_path, LLM_GATEWAY=PLANTED_KEY, COLUMNS="200", NO_COLOR="1")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "embedcurate",
                "curate",
                str(blend),
                "--out",
                str(tmp_path / "run"),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert server.faults_served["http_401_echo"] >= 1
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert PLANTED_KEY not in output
    assert "LLM_GATEWAY" in output  # the error says where the key goes
    assert "telemetry" not in output.lower()
    assert "database is locked" not in output
    time.sleep(1)  # the API server flushed and stopped with the command
    leaked = [
        str(path)
        for path in (tmp_path / "prefect-home").rglob("*")
        if path.is_file() and PLANTED_KEY.encode() in path.read_bytes()
    ]
    assert not leaked
    assert list((tmp_path / "prefect-home").rglob("*.db")), "Prefect's database was not used"
