"""The OpenAI-compatible backend against a real HTTP server on loopback that misbehaves."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from embedcurate.pipeline.blend import GeneratorConfig, parse_blend
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.generation.cache import CachingGenerator, ResponseCache
from embedcurate.pipeline.generation.openai_backend import OpenAIBackend
from embedcurate.pipeline.generation.prompts import Message, RenderedPrompt
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    RequestRefusedError,
    SamplingParams,
)
from testkit.llm_servers import ScriptedServer


def _config(server: ScriptedServer, **overrides: object) -> GeneratorConfig:
    settings: dict[str, object] = {
        "backend": "openai",
        "base_url": server.base_url,
        "model": "scripted",
        "timeout_s": 2.0,
        "max_retries": 3,
        "retry_backoff_s": 0.01,
    }
    settings.update(overrides)
    return GeneratorConfig(**settings)


def _request(topic: str) -> GenerationRequest:
    text = f'Examples.\n\nTask: about {topic}\n{{"user_query": "'
    return GenerationRequest(
        prompt=RenderedPrompt(form="completion", text=text),
        sampling=SamplingParams(max_tokens=16, temperature=0.0, stop=('"', "\n")),
    )


def _generate(backend: OpenAIBackend, requests: list[GenerationRequest]) -> dict:
    results: dict = {}
    backend.generate(requests, lambda index, result: results.__setitem__(index, result))
    return results


def test_dropped_connections_and_5xx_are_retried_until_an_answer() -> None:
    with ScriptedServer() as server:
        server.fail_next("drop")
        server.fail_next("http_500")
        results = _generate(OpenAIBackend(_config(server)), [_request("bees")])
        assert results[0].text.startswith("what should I know about")
        assert server.num_calls == 3
        assert server.faults_served == {"drop": 1, "http_500": 1}


def test_a_stalling_server_times_out_and_fails_clearly_after_bounded_retries() -> None:
    with ScriptedServer(stall_s=3.0) as server:
        server.fail_when("bees", "stall")
        backend = OpenAIBackend(_config(server, timeout_s=0.3, max_retries=2))
        started = time.monotonic()
        with pytest.raises(GenerationError) as info:
            _generate(backend, [_request("bees")])
        elapsed = time.monotonic() - started
        message = str(info.value)
        assert server.base_url in message
        assert "'scripted'" in message
        assert "after 3 attempt(s)" in message
        assert "APITimeoutError" in message
        assert server.num_calls == 3
        assert elapsed < 3 * 0.3 + 2.0  # three timeouts and short backoffs, not the stall


def test_broken_json_bodies_are_retried_then_reported() -> None:
    with ScriptedServer() as server:
        server.fail_when("bees", "broken_json")
        with pytest.raises(GenerationError, match=r"after 2 attempt\(s\)") as info:
            _generate(OpenAIBackend(_config(server, max_retries=1)), [_request("bees")])
        assert "1 of 1 request(s) failed" in str(info.value)
        assert server.num_calls == 2


def test_client_errors_are_not_retried() -> None:
    with ScriptedServer() as server:
        server.fail_when("bees", "http_401")
        with pytest.raises(GenerationError, match=r"after 1 attempt\(s\): AuthenticationError"):
            _generate(OpenAIBackend(_config(server)), [_request("bees")])
        assert server.num_calls == 1


def test_finished_calls_stay_cached_when_another_fails(tmp_path: Path) -> None:
    requests = [_request(topic) for topic in ("bees", "owls", "kites")]
    with ScriptedServer() as server:
        server.fail_when("owls", "http_500")
        backend = OpenAIBackend(_config(server, max_retries=1))
        generator = CachingGenerator(backend, ResponseCache(tmp_path))
        with pytest.raises(GenerationError, match=r"1 of 3 request\(s\) failed; request #1"):
            generator.generate(requests)
        assert len(generator.cache) == 2
        calls_before = server.num_calls
        assert calls_before == 2 + 2  # two answers, two attempts at the failing one

        server.clear_faults()
        resumed = CachingGenerator(backend, ResponseCache(tmp_path))
        results = resumed.generate(requests)
        assert server.num_calls == calls_before + 1  # only the failed request is sent again
        assert [r.cached for r in results] == [True, False, True]
        assert resumed.stats.num_cache_hits == 2
        assert resumed.stats.num_backend_calls == 1

        again = CachingGenerator(backend, ResponseCache(tmp_path))
        assert [r.text for r in again.generate(requests)] == [r.text for r in results]
        assert server.num_calls == calls_before + 1  # a repeated run makes no calls


def test_concurrency_is_bounded() -> None:
    with ScriptedServer(delay_s=0.2) as server:
        backend = OpenAIBackend(_config(server, concurrency=3))
        results = _generate(backend, [_request(f"topic {i}") for i in range(9)])
        assert len(results) == 9
        assert server.max_in_flight == 3


def test_response_format_steps_down_to_one_the_server_accepts() -> None:
    chat = GenerationRequest(
        prompt=RenderedPrompt(
            form="chat",
            messages=(Message("user", 'Write JSON.\n- "user_query": a query.\n'),),
        ),
        sampling=SamplingParams(max_tokens=64, temperature=0.0),
        json_schema={"type": "object", "properties": {"user_query": {"type": "string"}}},
    )
    with ScriptedServer() as server:
        server.refuse_formats = {"json_schema"}  # like llama.cpp's server
        backend = OpenAIBackend(_config(server))
        first = _generate(backend, [chat])
        second = _generate(backend, [chat])
        sent = [call["body"].get("response_format", {}).get("type") for call in server.calls]
        assert sent == ["json_schema", "json_object", "json_object"]
        assert server.calls[1]["body"]["response_format"]["schema"] == chat.json_schema
        assert '"user_query"' in first[0].text
        assert second[0].text == first[0].text


# a key of no known shape, in a variable whose name does not look secret: only the backend
# knows it is the key, so only redaction by value at the error boundary can catch it
PLANTED_KEY = "zq7PLANTEDkey0490xyzVALUE"


def test_a_key_echoed_by_the_server_is_in_no_error_or_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_GATEWAY", PLANTED_KEY)
    requests = [_request(topic) for topic in ("bees", "owls", "kites", "moths", "wrens")]
    with ScriptedServer() as server:
        server.fail_when("Task:", "http_401_echo")
        cfg = _config(server, api_key_env="LLM_GATEWAY", concurrency=1)
        with pytest.raises(RequestRefusedError) as info:
            _generate(OpenAIBackend(cfg), requests)
        assert server.num_calls == 1  # refused once: nothing else is sent, nothing retried
    message = str(info.value)
    assert PLANTED_KEY not in message
    assert "Bearer ***redacted***" in message  # the echo is there, without the key
    assert "LLM_GATEWAY" in message  # where the fix goes
    assert "5 of 5 request(s) failed" in message
    assert isinstance(info.value, ConfigError)  # an orchestrator's retry condition skips it
    assert PLANTED_KEY not in caplog.text


def test_a_forbidden_model_is_not_retried() -> None:
    with ScriptedServer() as server:
        server.fail_when("bees", "http_403")
        with pytest.raises(RequestRefusedError, match=r"after 1 attempt\(s\)"):
            _generate(OpenAIBackend(_config(server)), [_request("bees")])
        assert server.num_calls == 1


def test_retry_warnings_carry_no_credential_shapes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_GATEWAY", PLANTED_KEY)
    with ScriptedServer() as server:
        server.fail_next("http_500", 1)
        cfg = _config(server, api_key_env="LLM_GATEWAY")
        results = _generate(OpenAIBackend(cfg), [_request("bees")])
    assert len(results) == 1
    assert "retrying" in caplog.text
    assert PLANTED_KEY not in caplog.text


@pytest.mark.parametrize("value", [f"sk-{'a1B2' * 10}", "my key", "OPENAI-API-KEY", "1KEY"])
def test_api_key_env_must_name_a_variable(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        GeneratorConfig(backend="openai", model="m", api_key_env=value)
    assert "NAME of the environment variable" in str(info.value)
    assert value not in str(info.value)


def test_a_key_pasted_into_a_blend_is_refused_without_echoing_it() -> None:
    key = f"sk-{'Zx9' * 12}"
    data = {
        "name": "pasted",
        "sources": [],
        "generator": {"backend": "openai", "model": "m", "api_key_env": key},
    }
    with pytest.raises(ConfigError, match=r"generator\.api_key_env") as info:
        parse_blend(data, check_paths=False)
    assert key not in str(info.value)
    assert GeneratorConfig(api_key_env="my_llm_key").api_key_env == "my_llm_key"
