"""The curate flow on a real (ephemeral) Prefect API with the packaged MiniLM teacher."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import read_shards, require_valid

from .conftest import write_flow_blend


def _mtimes(run: Path) -> dict[str, float]:
    return {str(p.relative_to(run)): p.stat().st_mtime for p in run.rglob("report.json")}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, prefect_harness):
    from embedcurate.flows.curate import curate_flow

    root = tmp_path_factory.mktemp("flow")
    blend = write_flow_blend(root)
    summary = curate_flow(str(blend), str(root / "run"))
    return root, blend, summary


def test_curate_writes_valid_train_shards_and_a_card(first_run) -> None:
    root, _, summary = first_run
    manifest = require_valid(summary["train_dir"], TableKind.TRAIN)
    assert manifest.num_rows > 0
    assert Path(summary["card"]).is_file()
    run = root / "run"
    assert {"pairs/beir", "pairs/topics", "mined", "train"} <= {
        str(p.parent.relative_to(run)) for p in run.rglob("manifest.json")
    }
    assert (run / "corpus" / "beir" / "manifest.json").is_file()


def _artifacts(key: str) -> list[dict]:
    """Read artifacts over the REST API (the client's read_artifacts sends nulls this server
    version rejects)."""
    from prefect.settings import PREFECT_API_URL

    body = {"artifacts": {"key": {"any_": [key]}}, "limit": 10, "sort": "CREATED_DESC"}
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_curate_publishes_card_and_counts_artifacts(first_run) -> None:
    card = _artifacts("data-card-flowtest")
    counts = _artifacts("counts-flowtest")
    assert card
    assert card[0]["type"] == "markdown"
    assert card[0]["data"].startswith("---")
    assert counts
    assert counts[0]["type"] == "table"
    table = (
        json.loads(counts[0]["data"]) if isinstance(counts[0]["data"], str) else counts[0]["data"]
    )
    assert {row["stage"] for row in table} >= {"sources", "mine"}
    beir = next(r for r in table if r["stage"] == "sources" and r["source"] == "beir")
    assert beir["rows"] == read_shards(first_run[0] / "run" / "pairs" / "beir").num_rows
    assert beir["in"] == beir["kept"] + beir["dropped"]


def test_rerun_skips_and_a_changed_setting_reruns_only_what_it_affects(first_run) -> None:
    from embedcurate.flows.curate import curate_flow

    root, blend, summary = first_run
    run = root / "run"
    before = _mtimes(run)
    train_before = read_manifest(summary["train_dir"])
    curate_flow(str(blend), str(run))
    assert _mtimes(run) == before
    assert read_manifest(summary["train_dir"]).shards == train_before.shards

    blend.write_text(blend.read_text().replace("num_negatives: 2", "num_negatives: 1"))
    curate_flow(str(blend), str(run))
    after = _mtimes(run)
    assert after["pairs/beir/report.json"] == before["pairs/beir/report.json"]
    assert after["mined/report.json"] > before["mined/report.json"]
    assert after["pairs/topics/report.json"] > before["pairs/topics/report.json"]
    train = read_shards(run / "train", TableKind.TRAIN)
    assert max(len(n) for n in train.column("negatives").to_pylist()) == 1


def test_train_flow_trains_on_the_fresh_shards(first_run, tmp_path) -> None:
    from embedcurate.flows.train import train_flow

    _, _, summary = first_run
    run_dir = train_flow(
        shards_dir=summary["train_dir"],
        out_dir=str(tmp_path / "model"),
        stage="1",
        max_steps=2,
        batch_size=4,
        num_hard_negatives=1,
        max_length=64,
    )
    report = json.loads((Path(run_dir) / "train_report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == [1]
    assert report["stages"][0]["steps"] == 2
    assert Path(report["stages"][0]["model_dir"]).is_dir()


def test_train_flow_refuses_a_shard_set_that_does_not_validate(first_run, tmp_path) -> None:
    import shutil

    from embedcurate.flows.train import train_flow
    from embedcurate.pipeline.errors import ShardSetError

    broken = tmp_path / "broken"
    shutil.copytree(first_run[2]["train_dir"], broken)
    next(broken.glob("train-*.parquet")).unlink()
    with pytest.raises(ShardSetError, match="missing"):
        train_flow(shards_dir=str(broken), out_dir=str(tmp_path / "model"), max_steps=1)
    assert not (tmp_path / "model").exists()


def test_llm_server_stopped_mid_run_fails_clearly_and_keeps_finished_calls(
    tmp_path, prefect_harness
) -> None:
    import threading

    from embedcurate.flows.curate import curate_flow
    from embedcurate.pipeline.generation.cache import ResponseCache
    from embedcurate.pipeline.generation.types import GenerationError
    from testkit.llm_servers import ScriptedServer, wait_until

    cache_dir = tmp_path / "llm-cache"
    server = ScriptedServer()
    server.__enter__()
    generator = f"""generator:
  backend: openai
  base_url: {server.base_url}
  model: scripted-llm
  model_kind: base
  num_tasks: 3
  examples_per_task: 3
  max_retries: 1
  timeout_s: 2
  retry_backoff_s: 0.01
  cache_dir: {cache_dir}
"""
    blend = write_flow_blend(tmp_path / "data", extra=generator)

    def stop_after_some_calls() -> None:
        wait_until(lambda: server.num_calls >= 3, timeout_s=120)
        server.__exit__(None, None, None)

    stopper = threading.Thread(target=stop_after_some_calls, daemon=True)
    stopper.start()
    with pytest.raises(GenerationError, match="attempt") as info:
        curate_flow(str(blend), str(tmp_path / "run"))
    stopper.join(timeout=5)
    assert server.base_url in str(info.value)
    finished = len(ResponseCache(cache_dir))
    assert 3 <= finished <= server.num_calls
    assert not (tmp_path / "run" / "train" / "manifest.json").exists()


def test_retried_stage_tasks_wait_longer_before_each_try() -> None:
    """Prefect freezes a callable delay at decoration (for no retries: no delays) and
    `with_options(retries=...)` keeps that: the flow's tasks set their delays themselves."""
    from embedcurate.flows.curate import part_task, plan_task, stage_task, with_retries

    assert stage_task.with_options(retries=2).retry_delay_seconds == []  # what Prefect does
    assert with_retries(stage_task, "mine", 2).retry_delay_seconds == [5, 10]
    assert with_retries(plan_task, "mine-plan", 1).retry_delay_seconds == [5]
    worker = with_retries(part_task, "mine-encode", 2)
    assert (worker.name, worker.retries, worker.retry_delay_seconds) == ("mine-encode", 2, [5, 10])
