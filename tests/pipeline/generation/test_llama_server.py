"""The OpenAI-compatible path against llama.cpp's real server on the packaged Gemma."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from embedcurate.pipeline.blend import BlendConfig, GenerateStageConfig, GeneratorConfig
from embedcurate.pipeline.generation.openai_backend import OpenAIBackend
from embedcurate.pipeline.generation.prompts import Message, RenderedPrompt
from embedcurate.pipeline.generation.stage import run_generate
from embedcurate.pipeline.generation.types import GenerationRequest, SamplingParams
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import validate_shards
from testkit.llm_servers import LlamaServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server(
    tmp_path_factory: pytest.TempPathFactory, gemma_models_dir: Path
) -> Iterator[LlamaServer]:
    model = gemma_models_dir / "gemma-3-270m-q4_k_m.gguf"
    server = LlamaServer(model, tmp_path_factory.mktemp("llama") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _generator(server: LlamaServer, cache_dir: Path) -> GeneratorConfig:
    return GeneratorConfig(
        backend="openai",
        base_url=server.base_url,
        model="gemma-3-270m",
        model_kind="base",  # the GGUF has no chat template: few-shot completion prompts
        repetition_penalty=1.1,
        num_tasks=1,
        examples_per_task=2,
        max_tokens=192,  # 64 cuts every example short (json_truncated): nothing would be kept
        concurrency=2,
        timeout_s=120,
        cache_dir=cache_dir,
    )


def test_generate_through_llama_cpp_server_then_rerun_from_cache(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    generator = _generator(llama_server, tmp_path / "cache")
    blend = BlendConfig(name="llama-server-test", generator=generator)
    posts_before = llama_server.count_posts("/v1/completions")
    report = run_generate(tmp_path / "one", GenerateStageConfig.of(blend))
    posts = llama_server.count_posts("/v1/completions") - posts_before

    assert validate_shards(tmp_path / "one", TableKind.PAIRS) == []
    assert report.num_in == 2
    assert report.num_kept + sum(report.dropped.values()) == 2
    assert report.num_kept >= 1, report.dropped  # the server's Gemma writes usable pairs
    calls = report.details["calls"]
    assert posts == calls["num_backend_calls"] == calls["num_requests"] > 2
    assert calls["completion_tokens"] > 0

    again = run_generate(tmp_path / "two", GenerateStageConfig.of(blend))
    assert llama_server.count_posts("/v1/completions") - posts_before == posts  # no new calls
    assert again.details["calls"]["num_cache_hits"] == calls["num_requests"]
    hashes = [[e.sha256 for e in read_manifest(tmp_path / d).shards] for d in ("one", "two")]
    assert hashes[0] == hashes[1]


def test_the_server_refuses_json_schema_and_the_backend_steps_down(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    backend = OpenAIBackend(_generator(llama_server, tmp_path / "cache"))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = GenerationRequest(
        prompt=RenderedPrompt(form="chat", messages=(Message("user", "Name a city as JSON."),)),
        sampling=SamplingParams(max_tokens=16, temperature=0.0),
        json_schema=schema,
    )
    chats_before = llama_server.count_posts("/v1/chat/completions")
    results: dict = {}
    backend.generate([request], lambda index, result: results.__setitem__(index, result))
    assert llama_server.count_posts("/v1/chat/completions") - chats_before == 2
    assert results[0].text.lstrip().startswith("{")  # the grammar holds it to JSON
    assert results[0].completion_tokens > 0
