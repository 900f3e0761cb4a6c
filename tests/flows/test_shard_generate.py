"""Generation spread over workers: the planner brainstorms, each part of the generate step
runs as a task of its own against a real OpenAI-compatible HTTP server, and the synthetic
pairs are byte-identical to those written in one process.

Each run starts from its own empty response cache, so every call is made by the code under
test; the server counts them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from embedcurate.pipeline.blend import GenerateStageConfig, load_blend
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.generation.shard_generate import (
    generate_part,
    plans_folder,
    write_plan,
)
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.stages import StageContext, get_stage
from testkit.llm_servers import ScriptedServer

from .conftest import write_flow_blend

NUM_TASKS = 6
EXAMPLES = 2
CONCURRENCY = 2  # calls in flight per backend: what a killed worker can lose


@pytest.fixture(scope="module")
def server() -> Any:
    with ScriptedServer() as scripted:
        yield scripted


def write_generate_blend(root: Path, server: ScriptedServer, name: str) -> Path:
    """The flow test blend plus a generator on the scripted server, with a response cache of
    its own (`cache-NAME`), and the cheap lexical teacher."""
    extra = f"""teacher: {{model: "hashing:64"}}
generator:
  backend: openai
  base_url: {server.base_url}
  model: scripted-llm
  model_kind: base
  num_tasks: {NUM_TASKS}
  examples_per_task: {EXAMPLES}
  concurrency: {CONCURRENCY}
  cache_dir: {root / f"cache-{name}"}
"""
    return write_flow_blend(root / name, extra=extra)


def synthetic_hashes(run: Path) -> list[str]:
    hashes = [entry.sha256 for entry in read_manifest(run / "pairs" / "synthetic").shards]
    assert hashes
    return hashes


def stage_config(blend: Path) -> GenerateStageConfig:
    return GenerateStageConfig.of(load_blend(blend))


def calls_made(server: ScriptedServer, action: Any) -> int:
    before = server.num_calls
    action()
    return server.num_calls - before


@pytest.fixture(scope="module")
def in_one_process(tmp_path_factory: pytest.TempPathFactory, server: ScriptedServer) -> Any:
    """The generate stage run as the thread runner runs it: the reference."""
    root = tmp_path_factory.mktemp("generate")
    blend = write_generate_blend(root, server, "reference")
    run = root / "reference-run"
    spec = get_stage("generate")
    calls = calls_made(server, lambda: spec.run({}, StageContext(run_dir=run), stage_config(blend)))
    return root, synthetic_hashes(run), calls


def test_parts_run_anywhere_make_each_call_once_and_write_what_one_process_writes(
    in_one_process: Any, server: ScriptedServer
) -> None:
    root, reference, reference_calls = in_one_process
    blend = write_generate_blend(root, server, "parts")
    cfg, run = stage_config(blend), root / "parts-run"
    spec = get_stage("generate")
    assert spec.fan_out is not None
    context = StageContext(run_dir=run)
    parts: list[str] = []
    brainstorm_calls = calls_made(server, lambda: parts.extend(spec.fan_out.plan({}, context, cfg)))
    assert 2 <= len(parts) <= 16
    assert all(part.startswith("plans/") for part in parts)
    part_calls = calls_made(server, lambda: [spec.fan_out.run_part(p, cfg) for p in parts])
    # a part run again (a retry after its worker died) asks nothing it already has
    assert calls_made(server, lambda: generate_part(parts[0], cfg)) == 0
    stage_calls = calls_made(server, lambda: spec.run({}, context, cfg))
    assert (brainstorm_calls + part_calls, stage_calls) == (reference_calls, 0)
    assert synthetic_hashes(run) == reference
    report = (run / "pairs" / "synthetic" / "report.json").read_text()
    assert '"num_backend_calls": 0' in report
    assert not plans_folder(cfg.generator, run / "pairs" / "synthetic").exists()


def test_a_worker_that_does_not_see_the_plan_says_which_folder_to_share(
    in_one_process: Any, server: ScriptedServer, tmp_path: Path
) -> None:
    root, _, _ = in_one_process
    planned = stage_config(write_generate_blend(root, server, "planner"))
    (part, *_) = write_plan(planned, tmp_path / "run" / "pairs" / "synthetic")
    elsewhere = stage_config(write_generate_blend(root, server, "elsewhere"))
    with pytest.raises(ConfigError, match=r"set generator.cache_dir to a shared folder"):
        generate_part(part, elsewhere)


@pytest.mark.slow  # about 40 s: a curate run on a cluster of two worker processes, one killed
def test_dask_workers_generate_the_parts_survive_a_death_and_write_what_threads_write(
    in_one_process: Any, server: ScriptedServer, tmp_path: Path, prefect_harness: None
) -> None:
    from embedcurate.flows.curate import curate_flow
    from testkit.clusters import finished_tasks, local_dask_cluster
    from testkit.dask_faults import FailingResponseCommit

    root, reference, reference_calls = in_one_process
    blend = write_generate_blend(root, server, f"dask-{tmp_path.name}")
    log, flags = tmp_path / "commits.log", tmp_path / "faults"
    flags.mkdir()
    with local_dask_cluster(tmp_path / "dask") as (cluster, client):
        # once 5 responses are committed on the cluster, the worker about to commit dies
        client.register_plugin(FailingResponseCommit(log, flags, {5: "kill"}))
        calls = calls_made(
            server,
            lambda: curate_flow(
                str(blend), str(tmp_path / "run"), "dask", cluster.scheduler_address
            ),
        )
        finished = finished_tasks(client)
    assert synthetic_hashes(tmp_path / "run") == reference
    assert [f.name for f in flags.iterdir()] == ["kill-after-5"]
    # the dead worker lost at most the calls it had in flight; nothing committed was asked again
    assert reference_calls <= calls <= reference_calls + CONCURRENCY
    part_keys = [k for keys in finished.values() for k in keys if k.startswith("part_task-")]
    assert part_keys  # the parts ran as tasks on the workers
    workers = {line.split()[1] for line in log.read_text().splitlines()}
    assert len(workers) >= 2  # in more than one worker process


@pytest.mark.slow  # about 25 s: a local Ray whose workers import the pipeline
def test_ray_workers_generate_the_parts_and_write_what_threads_write(
    in_one_process: Any, server: ScriptedServer, tmp_path: Path, prefect_harness: None
) -> None:
    from embedcurate.flows.curate import curate_flow
    from testkit.clusters import local_ray, ray_task_pids

    root, reference, reference_calls = in_one_process
    blend = write_generate_blend(root, server, f"ray-{tmp_path.name}")
    with local_ray(num_cpus=2):
        calls = calls_made(server, lambda: curate_flow(str(blend), str(tmp_path / "run"), "ray"))
    assert synthetic_hashes(tmp_path / "run") == reference
    assert calls == reference_calls
    part_pids = ray_task_pids("generate-requests")
    assert part_pids  # the parts ran as Ray tasks, in worker processes
    assert os.getpid() not in part_pids
