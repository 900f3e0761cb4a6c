"""Field-by-field completion: the model writes the JSON values, the stage writes the rest.

A small base model continuing an opened JSON line (the few-shot completion form) mostly
writes sensible values but often breaks the structure: a stray quote, a missing comma, a key
left out, a list that never closes. Measured on the packaged Gemma 3 270M (bench/RESULTS.md):
2 of 6 one-request answers parsed and fit the schema, 5 of 6 driven field by field, in about
the same time. So each string value is one request that continues the prompt with the values
so far and stops at the closing quote (or a newline, which a JSON string cannot hold); the
stage writes the punctuation and the next key itself (`", "positive_document": "`, or `", "`
between list items). Requests for one step go out as one batch, so the OpenAI backend runs
them concurrently and vLLM batches them; each is cached like any other request.

This is guidance by construction for prompts without a grammar; with `guided_json` the
backend's own JSON-schema decoding answers in one request instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from embedcurate.pipeline.generation.cache import CachingGenerator
from embedcurate.pipeline.generation.filters import KEEP, Verdict, drop
from embedcurate.pipeline.generation.prompts import RenderedPrompt
from embedcurate.pipeline.generation.types import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

FIELD_STOPS = ('"', "\n")
CHARS_PER_TOKEN = 3  # generous: a field never needs more tokens than its maxLength allows


@dataclass(frozen=True)
class FieldStep:
    """One value the model writes, after the stage wrote `joiner` (empty for the first)."""

    joiner: str
    value_schema: dict[str, Any]


@dataclass(frozen=True)
class FieldedAnswer:
    """The values written, in step order, and why the answer stopped early (KEEP if not)."""

    values: list[str]
    verdict: Verdict


def object_steps(schema: dict[str, Any]) -> tuple[list[str], list[FieldStep]]:
    """Keys and steps for an object schema of string properties (a generation answer)."""
    properties = schema.get("properties", {})
    if schema.get("type") != "object" or any(
        p.get("type") != "string" for p in properties.values()
    ):
        raise ValueError("field-by-field completion needs an object schema of string fields")
    keys = list(properties)
    steps = [
        FieldStep("" if i == 0 else '", ' + json.dumps(key) + ': "', properties[key])
        for i, key in enumerate(keys)
    ]
    return keys, steps


def list_steps(item_schema: dict[str, Any], count: int) -> list[FieldStep]:
    """Steps for `count` string items of a list (a brainstorm answer)."""
    if item_schema.get("type") != "string":
        raise ValueError("field-by-field completion needs a list of strings")
    return [FieldStep("" if i == 0 else '", "', item_schema) for i in range(count)]


def field_token_limit(value_schema: dict[str, Any], max_tokens: int) -> int:
    """Tokens for one value: `max_tokens`, or fewer when the schema caps its length."""
    max_length = value_schema.get("maxLength")
    if max_length is None:
        return max_tokens
    return max(1, min(max_tokens, math.ceil(max_length / CHARS_PER_TOKEN)))


def decode_field(result: GenerationResult) -> tuple[str | None, Verdict]:
    """The generated text as a JSON string body (escapes such as \\u00e9 decoded)."""
    if result.finish_reason == "length":
        return None, drop("json_truncated", "value did not end within its token limit")
    try:
        return json.loads('"' + result.text + '"'), KEEP
    except json.JSONDecodeError as exc:
        return None, drop("json_invalid", str(exc))


def generate_fielded(
    generator: CachingGenerator,
    prompts: Sequence[RenderedPrompt],
    samplings: Sequence[SamplingParams],
    steps: Sequence[FieldStep],
    desc: str,
) -> list[FieldedAnswer]:
    """Drive each prompt's answer one value at a time.

    `prompts` end with the JSON opened on the first value (`{"user_query": "`); `samplings`
    are their sampling parameters. `max_tokens` bounds the whole answer, as in one request:
    each step gets what its predecessors left (capped by its field's `maxLength`), the field
    stops, and seed + step. An answer stops at its first failed value.
    """
    tails = [prompt.text for prompt in prompts]  # each prompt with the values written so far
    budgets = [sampling.max_tokens for sampling in samplings]  # max_tokens is per answer
    values: list[list[str]] = [[] for _ in prompts]
    verdicts = [KEEP] * len(prompts)
    for position, step in enumerate(steps):
        for i in range(len(prompts)):
            if verdicts[i].keep and budgets[i] <= 0:
                verdicts[i] = drop("json_truncated", "answer used up max_tokens")
        alive = [i for i, verdict in enumerate(verdicts) if verdict.keep]
        if not alive:
            break
        requests = []
        for i in alive:
            tails[i] += step.joiner
            sampling = replace(
                samplings[i],
                max_tokens=field_token_limit(step.value_schema, budgets[i]),
                stop=FIELD_STOPS,
                seed=(samplings[i].seed + position) & 0x7FFFFFFF,
            )
            requests.append(
                GenerationRequest(
                    prompt=RenderedPrompt(form="completion", text=tails[i]), sampling=sampling
                )
            )
        results = generator.generate(requests, desc=f"{desc} ({position + 1}/{len(steps)})")
        for i, result in zip(alive, results, strict=True):
            budgets[i] -= max(result.completion_tokens, 1)
            value, verdict = decode_field(result)
            if value is None:
                verdicts[i] = verdict
                continue
            values[i].append(value)
            tails[i] += result.text
    return [FieldedAnswer(values[i], verdicts[i]) for i in range(len(prompts))]
