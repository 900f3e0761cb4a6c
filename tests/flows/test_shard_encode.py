"""`curate --runner dask|ray`: the mine stage's corpus encoding runs as one task per part on
the workers, and the mined shards are byte-identical to the thread runner's.

Each run starts from its own empty embedding cache, so every document is encoded by the
runner under test; the teacher is a tiny random decoder whose embeddings, like a real
teacher's, change in the last bits with the group of texts they are encoded in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.manifest import read_manifest
from testkit.clusters import finished_tasks, local_dask_cluster, local_ray, ray_task_pids

from .conftest import write_corpus_folder

NUM_DOCS = 200
PART = 32  # texts per encode task: 7 parts of 200 documents


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testkit.tiny import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_corpus_folder(root / "beir", NUM_DOCS)
    return root


def write_blend(data_dir: Path, name: str, model: Path, **teacher: Any) -> Path:
    """A one-source blend whose embedding cache is its own (`cache-NAME`)."""
    options = "".join(f", {key}: {value}" for key, value in teacher.items())
    cache = data_dir / f"cache-{name}"  # absolute: workers may run in other folders
    blend = data_dir / f"blend-{name}.yaml"
    blend.write_text(
        f"""
name: shardenc
seed: 3
sources:
  - {{name: beir, kind: beir, path: beir, split: train, task: MSMARCO, stage: 1}}
teacher: {{model: "{model}", pooling: last, batch_size: 16, cache_dir: "{cache}"{options}}}
mining: {{num_negatives: 2, range_max: 10, on_too_few: keep, encode_part_size: {PART}}}
output: {{rows_per_shard: 16}}
"""
    )
    return blend


def mined_hashes(summary: dict[str, Any]) -> list[str]:
    """sha256 of every mined shard's file (data, scores and all)."""
    hashes = [entry.sha256 for entry in read_manifest(Path(summary["mined_dir"])).shards]
    assert hashes
    return hashes


@pytest.fixture(scope="module")
def thread_hashes(data_dir: Path, tiny_model: Path, prefect_harness: None) -> list[str]:
    """What the thread runner mines: the reference for the other runners."""
    from embedcurate.flows.curate import curate_flow

    blend = write_blend(data_dir, "thread", tiny_model)
    return mined_hashes(curate_flow(str(blend), str(data_dir / "thread-run")))


@pytest.mark.slow  # about 40 s: a cluster whose workers each load torch, one restarted
def test_dask_workers_encode_the_parts_survive_a_failure_and_a_death_and_mine_what_threads_mine(
    tmp_path, data_dir, tiny_model, thread_hashes
) -> None:
    from embedcurate.flows.curate import curate_flow
    from testkit.dask_faults import FailingEncode

    blend = write_blend(data_dir, f"dask-{tmp_path.name}", tiny_model)
    gpu_blend = write_blend(data_dir, f"gpu-{tmp_path.name}", tiny_model, device="cuda")
    with local_dask_cluster(tmp_path / "dask") as (cluster, client):
        address = cluster.scheduler_address
        # once 2 parts are done, one raises (Prefect retries it); once 4 are, one's worker dies
        # (Dask restarts the worker and runs the part again)
        encoded_log, flags = tmp_path / "encoded.log", tmp_path / "faults"
        flags.mkdir()
        client.register_plugin(FailingEncode(encoded_log, flags, {2: "raise", 4: "kill"}))
        on_dask = curate_flow(str(blend), str(tmp_path / "dask-run"), "dask", address)
        finished = finished_tasks(client)
        with pytest.raises(ConfigError, match=r"need a GPU.*no worker.*GPU resource"):
            curate_flow(str(gpu_blend), str(tmp_path / "gpu-run"), "dask", address)
    assert mined_hashes(on_dask) == thread_hashes
    # both faults happened and nothing was encoded twice: each document once in its part
    # (the parts committed before a fault stayed committed), then the 67 queries in the stage
    assert sorted(f.name for f in flags.iterdir()) == ["kill-after-4", "raise-after-2"]
    calls = [line.split() for line in encoded_log.read_text().splitlines()]
    assert sum(int(num_texts) for num_texts, _ in calls) == NUM_DOCS + 67
    # the encoding spread over worker processes (a worker's task log dies with it, so the
    # teachers' own log of process ids says where the work ran)
    assert len({pid for _, pid in calls}) >= 2, calls
    parts_finished = [key for keys in finished.values() for key in keys]
    assert sum(key.startswith("part_task-") for key in parts_finished) <= 7  # one per part
    assert not (tmp_path / "gpu-run" / "pairs").exists()  # refused before any stage ran


@pytest.mark.slow  # about 30 s: a local Ray whose workers each load torch
def test_ray_workers_encode_the_parts_and_mine_what_threads_mine(
    tmp_path, data_dir, tiny_model, thread_hashes
) -> None:
    from embedcurate.flows.curate import curate_flow

    blend = write_blend(data_dir, f"ray-{tmp_path.name}", tiny_model)
    gpu_blend = write_blend(data_dir, f"gpu-{tmp_path.name}", tiny_model, device="cuda")
    with local_ray(num_cpus=2):  # the runner finds Ray started and leaves it for the next flow
        on_ray = curate_flow(str(blend), str(tmp_path / "ray-run"), "ray")
        with pytest.raises(ConfigError, match=r"need a GPU.*Ray cluster has no GPU"):
            curate_flow(str(gpu_blend), str(tmp_path / "gpu-run"), "ray")
    assert mined_hashes(on_ray) == thread_hashes
    encode_pids = ray_task_pids("mine-encode")
    assert encode_pids  # the parts ran as Ray tasks, in worker processes
    assert os.getpid() not in encode_pids
    assert not (tmp_path / "gpu-run" / "pairs").exists()


def test_a_runner_without_the_shared_cache_is_refused_before_it_starts(
    tmp_path, data_dir, tiny_model, prefect_harness
) -> None:
    from embedcurate.flows.curate import curate_flow

    blend = write_blend(data_dir, f"nocache-{tmp_path.name}", tiny_model, cache="false")
    for runner in ("dask", "ray"):
        with pytest.raises(ConfigError, match=rf"teacher.cache: false .* --runner {runner}"):
            curate_flow(str(blend), str(tmp_path / "run"), runner)
    assert not (tmp_path / "run").exists()


def _fan_out_decision(task_runner: Any, device: str, backend: str) -> dict[str, bool]:
    """What the curate flow decides for the mine and generate stages' tasks on this runner's
    cluster (the generator is never started: deciding needs its settings only)."""
    from prefect import flow

    from embedcurate.flows.curate import _fan_out_gpus
    from embedcurate.pipeline.blend import parse_blend
    from embedcurate.pipeline.stages import get_stage

    blend = parse_blend(
        {
            "name": "t",
            "sources": [{"name": "unit", "kind": "jsonl", "path": "unused.jsonl"}],
            "teacher": {"model": "hashing:16", "device": device},
            "generator": {"backend": backend, "model": "some-llm", "base_url": "http://x/v1"},
        },
        check_paths=False,
    )
    stages = [get_stage(name) for name in ("generate", "mine")]
    active = [(spec, spec.section(blend)) for spec in stages]

    @flow(task_runner=task_runner)
    def decide() -> dict[str, bool]:
        return _fan_out_gpus(active)

    return decide()


def test_dask_tasks_take_a_gpu_where_the_cluster_declares_gpus(prefect_harness) -> None:
    """An in-process cluster whose workers declare a GPU resource (none is needed to run):
    teachers on `auto` and `cuda` take one per task, on `cpu` do not, generation takes one
    for vLLM only, and the request reaches the scheduler as a resource restriction."""
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from embedcurate.flows.runners import cluster_gpus, gpu_request

    with LocalCluster(
        n_workers=2, processes=False, resources={"GPU": 1}, dashboard_address=None
    ) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        decisions = {
            (device, backend): _fan_out_decision(runner, device, backend)
            for device, backend in (("auto", "openai"), ("cuda:0", "vllm"), ("cpu", "embedded"))
        }
        with runner.duplicate() as started:
            assert cluster_gpus(started) == 2
            with gpu_request(started):
                future = started.client.submit(sum, [1, 2], pure=False)
            assert future.result() == 3  # held: the scheduler keeps the task until released
            restrictions = started.client.run_on_scheduler(
                lambda dask_scheduler, key=future.key: (
                    dask_scheduler.tasks[key].resource_restrictions
                )
            )
    assert decisions == {
        ("auto", "openai"): {"generate": False, "mine": True},
        ("cuda:0", "vllm"): {"generate": True, "mine": True},
        ("cpu", "embedded"): {"generate": False, "mine": False},
    }
    assert restrictions == {"GPU": 1}
