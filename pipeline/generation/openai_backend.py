"""Any OpenAI-compatible server (vLLM serve, llama.cpp's server, OpenAI) through `openai`.

Requests run concurrently (at most `concurrency` in flight), each with a timeout and a
bounded number of retries with exponential backoff and jitter on what is worth retrying:
timeouts, dropped connections, 429 and 5xx answers, and bodies that are not the JSON the
API promises. A request that still fails is reported once every other request has finished
(and so been cached): the error names the server, the model and the last cause.

Answers that retrying cannot change (400, 401, 403, 404) are not retried: after a 401 or 403
no further request is sent, and the run fails with `RequestRefusedError`. Every message that
leaves this module (warnings, errors) is scrubbed of the API key's value and of credential
shapes (`Bearer ...`, `sk-...`) first: servers echo request headers in their error bodies.

Guided JSON goes as `response_format`, stepping down once per server when it refuses a
form: `json_schema` (OpenAI, vLLM), then `json_object` with the schema (llama.cpp's
server), then plain `json_object`, then none. Base models get the completions endpoint.

This is the only module that imports `openai`, and it does so lazily.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    RequestRefusedError,
    ResultCallback,
)
from embedcurate.pipeline.redact import env_secrets, scrub_text

logger = logging.getLogger(__name__)

BACKOFF_CAP_S = 30.0
# Response formats to try, most specific first; None sends no response_format.
RESPONSE_FORMATS: tuple[str | None, ...] = (
    "json_schema",
    "json_object+schema",
    "json_object",
    None,
)
T = TypeVar("T")
# Statuses that say the request or its credentials are wrong: a retry gets the same answer.
REFUSED_STATUSES = frozenset({400, 401, 403, 404})
# After one of these, every other request would be refused too: stop sending.
CREDENTIAL_STATUSES = frozenset({401, 403})


class MalformedResponse(Exception):
    """A 2xx answer without the fields an OpenAI-compatible response has (worth a retry)."""


@dataclass
class _Failure:
    index: int
    attempts: int
    error: BaseException


def run_coroutine(coroutine: Awaitable[T]) -> T:
    """Run to completion from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]


def response_format_payload(level: str | None, schema: dict[str, Any]) -> dict[str, Any] | None:
    if level == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if level == "json_object+schema":
        return {"type": "json_object", "schema": schema}
    if level == "json_object":
        return {"type": "json_object"}
    return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.base_url = cfg.base_url or "https://api.openai.com/v1"
        self.model_id = cfg.model
        self.cache_identity = f"openai:{cfg.model}"
        self._format_level = 0

    def _retryable(self) -> tuple[type[BaseException], ...]:
        import openai

        return (
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.RateLimitError,
            openai.InternalServerError,
            openai.APIResponseValidationError,
            json.JSONDecodeError,
            MalformedResponse,
        )

    def generate(self, requests: Sequence[GenerationRequest], on_result: ResultCallback) -> None:
        failures = run_coroutine(self._generate_all(requests, on_result))
        if not failures:
            return
        message = self._failure_message(failures, len(requests))
        if any(_status(failure.error) in REFUSED_STATUSES for failure in failures):
            raise RequestRefusedError(message)
        raise GenerationError(message)

    def _failure_message(self, failures: list[_Failure], total: int) -> str:
        first = next((f for f in failures if _status(f.error) in REFUSED_STATUSES), failures[0])
        cause = f"{type(first.error).__name__}: {first.error}"
        message = (
            f"openai backend at {self.base_url} (model {self.model_id!r}): {len(failures)} of "
            f"{total} request(s) failed; request #{first.index} after {first.attempts} "
            f"attempt(s): {cause}. "
        )
        if _status(first.error) in CREDENTIAL_STATUSES:
            message += (
                f"The server refused the API key: put a valid key in the environment variable "
                f"{self.cfg.api_key_env} (the generator's api_key_env names it) and rerun; "
            )
        elif _status(first.error) in REFUSED_STATUSES:
            message += "The server refused the request itself (check the model name); "
        message += (
            f"the {total - len(failures)} finished response(s) are cached, a rerun retries only "
            "the failed ones."
        )
        return self._scrub(message)

    def _scrub(self, text: str) -> str:
        """`text` without the API key's value, secret environment values or credential shapes."""
        key = os.environ.get(self.cfg.api_key_env)
        return scrub_text(text, [key, *env_secrets()] if key else None)

    async def _generate_all(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback
    ) -> list[_Failure]:
        from openai import AsyncOpenAI

        api_key = os.environ.get(self.cfg.api_key_env) or "not-needed"
        client = AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, timeout=self.cfg.timeout_s, max_retries=0
        )
        semaphore = asyncio.Semaphore(self.cfg.concurrency)
        failures: list[_Failure] = []
        refused: list[BaseException] = []  # a 401/403: the requests not yet sent stay unsent

        async def run_one(index: int, request: GenerationRequest) -> None:
            async with semaphore:
                if refused:
                    failures.append(_Failure(index, 0, refused[0]))
                    return
                try:
                    result = await self._call_with_retries(client, request)
                except _GaveUp as gave_up:
                    failures.append(_Failure(index, gave_up.attempts, gave_up.error))
                    if _status(gave_up.error) in CREDENTIAL_STATUSES:
                        refused.append(gave_up.error)
                    return
            on_result(index, result)

        async with client:
            await asyncio.gather(*(run_one(i, r) for i, r in enumerate(requests)))
        return sorted(failures, key=lambda failure: failure.index)

    async def _call_with_retries(self, client: Any, request: GenerationRequest) -> GenerationResult:
        import openai

        retryable = self._retryable()
        attempt = 0
        while True:
            attempt += 1
            level = self._format_level
            try:
                return await self._call(client, request, RESPONSE_FORMATS[level])
            except openai.APIStatusError as exc:
                if exc.status_code not in CREDENTIAL_STATUSES and self._refuses_response_format(
                    exc, request, level
                ):
                    continue  # the next attempt sends a simpler response_format
                if exc.status_code in REFUSED_STATUSES or not isinstance(exc, retryable):
                    raise _GaveUp(attempt, exc) from None
                error: BaseException = exc
            except retryable as exc:
                error = exc
            if attempt > self.cfg.max_retries:
                raise _GaveUp(attempt, error)
            delay = self._backoff(attempt)
            logger.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.2fs",
                self.base_url,
                attempt,
                type(error).__name__,
                self._scrub(str(error)),
                delay,
            )
            await asyncio.sleep(delay)

    def _refuses_response_format(
        self, exc: Exception, request: GenerationRequest, level: int
    ) -> bool:
        """Step down the response-format ladder when the server rejects the current form."""
        if request.json_schema is None or RESPONSE_FORMATS[level] is None:
            return False
        if getattr(exc, "status_code", None) == 429 or "response_format" not in str(exc):
            return False
        if self._format_level == level:
            self._format_level = level + 1
            logger.warning(
                "%s refuses response_format %s; trying %s",
                self.base_url,
                RESPONSE_FORMATS[level],
                RESPONSE_FORMATS[level + 1] or "none",
            )
        return True

    def _backoff(self, attempt: int) -> float:
        base = min(BACKOFF_CAP_S, self.cfg.retry_backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)

    async def _call(
        self, client: Any, request: GenerationRequest, level: str | None
    ) -> GenerationResult:
        sampling = request.sampling
        options: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        if sampling.stop:
            options["stop"] = list(sampling.stop)
        extra_body: dict[str, Any] = {}
        if sampling.repetition_penalty is not None:
            # not an OpenAI parameter: vLLM's name, then llama.cpp's; servers ignore the other
            extra_body["repetition_penalty"] = sampling.repetition_penalty
            extra_body["repeat_penalty"] = sampling.repetition_penalty
        response_format = (
            None
            if request.json_schema is None
            else response_format_payload(level, request.json_schema)
        )
        if request.prompt.form == "chat":
            messages = [{"role": m.role, "content": m.content} for m in request.prompt.messages]
            if response_format is not None:
                options["response_format"] = response_format
            response = await client.chat.completions.create(
                messages=messages, extra_body=extra_body or None, **options
            )
            return _result(response, chat=True)
        if response_format is not None:  # not in the completions API; vLLM accepts it
            extra_body["response_format"] = response_format
        response = await client.completions.create(
            prompt=request.prompt.text, extra_body=extra_body or None, **options
        )
        return _result(response, chat=False)

    def close(self) -> None:
        """Clients are opened per `generate` call and closed by it."""


class _GaveUp(Exception):
    def __init__(self, attempts: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.attempts = attempts
        self.error = error


def _status(error: BaseException) -> int | None:
    """The HTTP status of an answer the server gave, None for transport errors."""
    return getattr(error, "status_code", None)


def _result(response: Any, *, chat: bool) -> GenerationResult:
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedResponse(f"response without choices: {str(response)[:200]}")
    choice = choices[0]
    text = (choice.message.content if choice.message else None) if chat else choice.text
    if text is None:
        raise MalformedResponse(f"choice without text: {str(choice)[:200]}")
    usage = getattr(response, "usage", None)
    return GenerationResult(
        text=text,
        finish_reason=choice.finish_reason,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )
