"""The generate stage end to end through the OpenAI backend and a scripted loopback server."""

from __future__ import annotations

import json
from pathlib import Path

from embedcurate.pipeline.blend import BlendConfig, GenerateStageConfig, GeneratorConfig
from embedcurate.pipeline.generation.prompts import load_template
from embedcurate.pipeline.generation.stage import SOURCE, run_generate
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import read_shards, validate_shards
from testkit.llm_servers import ScriptedServer


def _blend(server: ScriptedServer, cache_dir: Path, **overrides: object) -> BlendConfig:
    settings: dict[str, object] = {
        "backend": "openai",
        "base_url": server.base_url,
        "model": "scripted-llm",
        "model_kind": "base",
        "num_tasks": 3,
        "examples_per_task": 3,
        "retry_backoff_s": 0.01,
        "cache_dir": cache_dir,
    }
    settings.update(overrides)
    return BlendConfig(name="gen-test", seed=7, generator=GeneratorConfig(**settings))


def _shard_hashes(out: Path) -> list[str]:
    return [entry.sha256 for entry in read_manifest(out).shards]


def test_generated_pairs_rows_carry_task_prompt_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "pairs" / "synthetic"
    with ScriptedServer() as server:
        server.copy_query_when("ambiguous")  # such answers must be caught by the copy check
        blend = _blend(server, tmp_path / "cache")
        assert blend.generator is not None
        report = run_generate(out, GenerateStageConfig.of(blend))

    assert validate_shards(out, TableKind.PAIRS) == []
    saved = StageReport.load(out / "report.json")
    assert saved.num_in == report.num_in == 9
    assert saved.num_kept + sum(saved.dropped.values()) == 9
    assert saved.dropped.get("query_in_document", 0) == server.copied_queries
    tasks = report.details["tasks"]["short-long"]
    assert len(tasks) == 3
    assert all(task.startswith("Given a question about") for task in tasks)

    template = load_template("generate", "short-long")
    rows = read_shards(out).to_pylist()
    assert len(rows) == report.num_kept >= 1
    for row in rows:
        assert row["source"] == SOURCE
        assert (row["task_type"], row["stage"], row["task_name"]) == (
            "retrieval",
            1,
            "SyntheticShortLong",
        )
        assert row["instruction"] in report.details["tasks"]["short-long"]
        assert row["query"].startswith("what should I know about")
        assert row["positive_ids"] == [row["positive_id"]]
        assert len(row["given_negatives"]) == 1
        assert row["generator"] == "scripted-llm"
        assert row["prompt_id"] == template.prompt_id
        provenance = json.loads(row["provenance"])
        assert set(provenance["attributes"]) == set(template.spec.attributes)
        assert provenance["prompt_form"] == "completion"
    # every value is one request: 3 brainstorm items, then 3 fields for each of 9 examples
    calls = report.details["calls"]
    assert calls["num_backend_calls"] == 3 + 9 * 3
    assert calls["num_cache_hits"] == 0


def test_a_second_run_makes_no_calls_and_writes_the_same_shards(tmp_path: Path) -> None:
    with ScriptedServer() as server:
        blend = _blend(server, tmp_path / "cache", num_tasks=2, examples_per_task=2)
        assert blend.generator is not None
        first = run_generate(tmp_path / "one", GenerateStageConfig.of(blend))
        calls_after_first = server.num_calls
        second = run_generate(tmp_path / "two", GenerateStageConfig.of(blend))
        assert server.num_calls == calls_after_first  # counted at the server
    assert second.details["calls"]["num_backend_calls"] == 0
    assert second.details["calls"]["num_cache_hits"] == first.details["calls"]["num_requests"]
    assert _shard_hashes(tmp_path / "one") == _shard_hashes(tmp_path / "two")
    assert second.num_kept == first.num_kept


def test_the_response_cache_folder_stays_out_of_the_report_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "run" / "pairs" / "synthetic"
    cache = tmp_path / "home" / ".cache" / "embedcurate"
    with ScriptedServer() as server:
        blend = _blend(server, cache, num_tasks=1, examples_per_task=1)
        assert blend.generator is not None
        run_generate(out, GenerateStageConfig.of(blend))
    assert any(cache.rglob("*"))  # the responses were cached there
    for name in ("report.json", "manifest.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(cache) not in text, name
        assert str(tmp_path / "run") not in text, name


def test_sts_and_classification_rows_feed_stage_two(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    with ScriptedServer() as server:
        blend = _blend(
            server,
            tmp_path / "cache",
            task_types=["sts", "classification"],
            num_tasks=2,
            examples_per_task=2,
        )
        assert blend.generator is not None
        report = run_generate(out, GenerateStageConfig.of(blend))
    rows = read_shards(out).to_pylist()
    by_type = {row["task_type"]: row for row in rows}
    assert set(by_type) == {"sts", "classification"}
    sts, classification = by_type["sts"], by_type["classification"]
    assert (sts["stage"], sts["symmetric"], sts["task_name"]) == (2, True, "SyntheticSTS")
    assert sts["score"] == float(json.loads(sts["provenance"])["attributes"]["high_score"])
    assert classification["stage"] == 2
    assert classification["label"] == classification["positive"]
    assert classification["given_negatives"][0] != classification["label"]
    assert set(report.details["prompt_ids"]) == {"sts", "classification"}


def test_chat_models_answer_in_one_request_with_a_json_response_format(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    with ScriptedServer() as server:
        blend = _blend(server, tmp_path / "cache", model_kind="chat", num_tasks=2)
        assert blend.generator is not None
        report = run_generate(out, GenerateStageConfig.of(blend))
        bodies = [call["body"] for call in server.calls]
    assert report.details["prompt_form"] == "chat"
    assert report.details["guided_json"] is True
    assert all(call["path"].endswith("/chat/completions") for call in server.calls)
    assert len(bodies) == 1 + 2 * 3  # one brainstorm call, one call per example
    assert all(body["response_format"]["type"] == "json_schema" for body in bodies)
    rows = read_shards(out).to_pylist()
    assert len(rows) == report.num_kept >= 1
    assert json.loads(rows[0]["provenance"])["prompt_form"] == "chat"
