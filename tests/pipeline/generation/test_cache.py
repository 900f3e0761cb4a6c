from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from embedcurate.pipeline.generation.cache import ResponseCache, cache_key
from embedcurate.pipeline.generation.prompts import Message, RenderedPrompt
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

REQUEST = GenerationRequest(
    prompt=RenderedPrompt(form="completion", text='Task: x\n{"q": "'),
    sampling=SamplingParams(max_tokens=32, temperature=0.8, seed=3, stop=("\n",)),
)


def test_responses_survive_reopening_the_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = cache_key(REQUEST, "model-a")
    assert cache.get(key) is None
    cache.put(key, "model-a", GenerationResult("text", "stop", 12, 3))
    cache.close()  # as if the process ended here
    reopened = ResponseCache(tmp_path)
    assert reopened.get(key) == GenerationResult("text", "stop", 12, 3, cached=True)
    assert len(reopened) == 1


def test_the_key_covers_prompt_model_sampling_and_schema() -> None:
    base = cache_key(REQUEST, "model-a")
    assert cache_key(REQUEST, "model-a") == base
    chat = GenerationRequest(
        prompt=RenderedPrompt(form="chat", messages=(Message("user", 'Task: x\n{"q": "'),)),
        sampling=REQUEST.sampling,
    )
    variants = [
        cache_key(REQUEST, "model-b"),
        cache_key(replace(REQUEST, sampling=replace(REQUEST.sampling, seed=4)), "model-a"),
        cache_key(replace(REQUEST, sampling=replace(REQUEST.sampling, max_tokens=33)), "model-a"),
        cache_key(replace(REQUEST, json_schema={"type": "object"}), "model-a"),
        cache_key(chat, "model-a"),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_an_unreadable_cache_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "generation" / "responses.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(GenerationError, match=str(path)):
        ResponseCache(tmp_path)
