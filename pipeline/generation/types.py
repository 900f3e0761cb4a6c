"""The small interface every generator backend implements: requests, results, the protocol.

A backend turns `GenerationRequest`s (a rendered prompt, sampling parameters and, when
guided, the JSON schema) into `GenerationResult`s. It reports each finished result through
`on_result` as soon as it has it, so the caller can cache it before the next one finishes;
when requests fail for good, it raises `GenerationError` after every other request is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from embedcurate.pipeline.errors import ConfigError, EmbedCurateError
from embedcurate.pipeline.generation.prompts import RenderedPrompt

ModelKind = Literal["base", "chat"]


class GenerationError(EmbedCurateError):
    """A backend that could not produce responses (after its retries, where it has them)."""


class RequestRefusedError(GenerationError, ConfigError):
    """The server refused the requests themselves (400, 401, 403, 404): the key, the model or
    the request is wrong, so no retry (ours or an orchestrator's) can succeed. A ConfigError,
    so a retry condition that skips configuration errors skips it too."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float
    top_p: float = 0.95
    seed: int = 0
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None  # None: the server's default

    def engine_options(self, repetition_key: str) -> dict[str, Any]:
        """Keyword arguments for an in-process engine (llama.cpp and vLLM name the penalty
        differently, hence `repetition_key`); an unset penalty is left to the engine."""
        options: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop) or None,
        }
        if self.repetition_penalty is not None:
            options[repetition_key] = self.repetition_penalty
        return options

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass(frozen=True)
class GenerationRequest:
    prompt: RenderedPrompt
    sampling: SamplingParams
    json_schema: dict[str, Any] | None = field(default=None, hash=False)

    def cache_payload(self, model_identity: str) -> dict[str, Any]:
        """Everything that determines the response: prompt, model, sampling, guidance."""
        return {
            "model": model_identity,
            "prompt": self.prompt.payload(),
            "sampling": self.sampling.to_dict(),
            "json_schema": self.json_schema,
        }


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any], *, cached: bool = False) -> GenerationResult:
        return cls(
            text=payload["text"],
            finish_reason=payload.get("finish_reason"),
            prompt_tokens=int(payload.get("prompt_tokens", 0)),
            completion_tokens=int(payload.get("completion_tokens", 0)),
            cached=cached,
        )


ResultCallback = Callable[[int, GenerationResult], None]


class GeneratorBackend(Protocol):
    name: str
    model_id: str  # what rows record as their generator
    cache_identity: str  # what response cache keys use for "the model"

    def generate(self, requests: Sequence[GenerationRequest], on_result: ResultCallback) -> None:
        """Call `on_result(index, result)` once per request; raise GenerationError on failure."""
        ...

    def close(self) -> None: ...
