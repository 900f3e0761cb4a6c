"""Checks on generated examples. Each returns a `Verdict`: keep, or drop with a reason.

Per answer: JSON parse (`json_invalid`, or `json_truncated` when the model hit max_tokens),
the template's schema (`schema_*`, `field_empty`, `field_too_long`), the query copied into
the document, the hard negative equal to the positive, a few-shot example copied back.
Over the set: exact duplicates (normalised hash), near duplicates (teacher cosine between
queries), round-trip consistency (the teacher must rank the positive within the top k for
its query among the generated documents, E5-Mistral/Promptagator-style) and, optionally,
easiness (positive beating the hard negative by a wide margin).

A check that raises is not a pass: `run_check` drops every row it was to judge, with the
reason `check_failed:<name>`, and logs the error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedcurate.pipeline.generation.types import GenerationResult
from embedcurate.pipeline.textnorm import containment, normalize_text, text_hash, word_ngrams

logger = logging.getLogger(__name__)

MIN_COPY_WORDS = 4  # a shorter query inside its document is usually just its topic
COPY_NGRAM = 8


@dataclass(frozen=True)
class Verdict:
    reason: str | None = None
    detail: str = ""

    @property
    def keep(self) -> bool:
        return self.reason is None


KEEP = Verdict()


def drop(reason: str, detail: str = "") -> Verdict:
    return Verdict(reason=reason, detail=detail)


def run_check(name: str, check: Callable[[], list[Verdict]], num_rows: int) -> list[Verdict]:
    """Run a set-level check; if it cannot run, every row it judges is dropped, not kept."""
    try:
        verdicts = check()
    except Exception as exc:  # any failure of the check must drop, never pass, its rows
        logger.exception("check %s could not run on %d row(s); dropping them", name, num_rows)
        return [drop(f"check_failed:{name}", f"{type(exc).__name__}: {exc}")] * num_rows
    if len(verdicts) != num_rows:
        return [drop(f"check_failed:{name}", "wrong number of verdicts")] * num_rows
    return verdicts


# --- one answer ----------------------------------------------------------------------------


def parse_json_answer(result: GenerationResult, prefix: str) -> tuple[Any, Verdict]:
    """The first JSON value in `prefix + text` (chat models may wrap it in prose or fences)."""
    text = prefix + result.text
    failed = "json_truncated" if result.finish_reason == "length" else "json_invalid"
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None, drop(failed, "no JSON value in the answer")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return None, drop(failed, str(exc))
    return value, KEEP


def check_schema(value: Any, schema: dict[str, Any], path: str = "$") -> Verdict:
    """The subset of JSON Schema the templates use: object, array, string, number, integer,
    with properties/required, items/minItems/maxItems and minLength/maxLength (after strip).
    Extra keys are ignored: they never reach a row."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return drop("schema_not_object", path)
        for key in schema.get("required", []):
            if key not in value:
                return drop("schema_missing_field", f"{path}.{key}")
        for key, sub_schema in schema.get("properties", {}).items():
            if key in value:
                verdict = check_schema(value[key], sub_schema, f"{path}.{key}")
                if not verdict.keep:
                    return verdict
        return KEEP
    if kind == "array":
        if not isinstance(value, list):
            return drop("schema_wrong_type", f"{path} is not a list")
        if len(value) < schema.get("minItems", 0):
            return drop("field_empty", path)
        if len(value) > schema.get("maxItems", len(value)):
            return drop("field_too_long", f"{path} has {len(value)} items")
        item_schema = schema.get("items", {})
        for number, item in enumerate(value):
            verdict = check_schema(item, item_schema, f"{path}[{number}]")
            if not verdict.keep:
                return verdict
        return KEEP
    if kind == "string":
        return check_string(value, schema, path)
    if kind in ("number", "integer"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return KEEP if ok else drop("schema_wrong_type", f"{path} is not a number")
    return KEEP


def check_string(value: Any, schema: dict[str, Any], path: str = "$") -> Verdict:
    if not isinstance(value, str):
        return drop("schema_wrong_type", f"{path} is not a string")
    length = len(value.strip())
    if length == 0 or length < schema.get("minLength", 1):
        return drop("field_empty", f"{path} has {length} characters")
    if length > schema.get("maxLength", length):
        return drop("field_too_long", f"{path} has {length} characters")
    return KEEP


def check_query_not_copied(query: str, document: str) -> Verdict:
    """Drop when one text is the other, or the shorter (of 4+ words) sits inside the longer."""
    q, d = normalize_text(query), normalize_text(document)
    if q == d:
        return drop("query_in_document", "query and document are the same text")
    shorter, longer = (q, d) if len(q) <= len(d) else (d, q)
    if len(shorter.split()) >= MIN_COPY_WORDS and f" {shorter} " in f" {longer} ":
        return drop("query_in_document", "one text contains the other verbatim")
    return KEEP


def check_negative_differs(positive: str, negative: str | None) -> Verdict:
    if negative is not None and normalize_text(positive) == normalize_text(negative):
        return drop("negative_equals_positive")
    return KEEP


def check_not_example(text: str, example_texts: Sequence[str]) -> Verdict:
    """Base models like to repeat a few-shot example, whole or in long runs; such a row
    teaches nothing new. Dropped when equal after normalisation, or when at least half of
    the text's word 8-grams come from one example."""
    key = text_hash(text)
    grams = word_ngrams(text, COPY_NGRAM)
    for example in example_texts:
        if text_hash(example) == key:
            return drop("copied_example", "equal to a few-shot example")
        if len(grams) > 1 and containment(grams, word_ngrams(example, COPY_NGRAM)) >= 0.5:
            return drop("copied_example", "half of it copied from a few-shot example")
    return KEEP


# --- the set ---------------------------------------------------------------------------------


def exact_duplicates(texts: Sequence[str], reason: str = "duplicate") -> list[Verdict]:
    """Keep the first of each normalised text."""
    seen: set[str] = set()
    verdicts = []
    for text in texts:
        key = text_hash(text)
        verdicts.append(drop(reason) if key in seen else KEEP)
        seen.add(key)
    return verdicts


def near_duplicates(embeddings: np.ndarray, threshold: float) -> list[Verdict]:
    """Greedy: a row is dropped when its cosine with an earlier kept row reaches `threshold`.

    `embeddings`: (rows, dim), L2-normalised.
    """
    kept: list[int] = []
    verdicts = []
    for row in range(embeddings.shape[0]):
        if kept and float(np.max(embeddings[kept] @ embeddings[row])) >= threshold:
            verdicts.append(drop("near_duplicate", f"cosine >= {threshold}"))
        else:
            kept.append(row)
            verdicts.append(KEEP)
    return verdicts


def positive_ranks(scores: np.ndarray, positive_columns: Sequence[int]) -> np.ndarray:
    """1-based rank of each row's positive among all documents.

    `scores`: (queries, documents); ties count in the positive's favour.
    """
    rows = np.arange(scores.shape[0])
    positive_scores = scores[rows, np.asarray(positive_columns)]  # (queries,)
    return 1 + (scores > positive_scores[:, None]).sum(axis=1)


def round_trip(scores: np.ndarray, positive_columns: Sequence[int], top_k: int) -> list[Verdict]:
    """Keep a row only if its query finds its own positive within the top k documents."""
    ranks = positive_ranks(scores, positive_columns)
    return [
        KEEP if rank <= top_k else drop("round_trip_failed", f"positive ranked {rank}")
        for rank in ranks.tolist()
    ]


def too_easy(
    positive_scores: Sequence[float], negative_scores: Sequence[float | None], margin: float
) -> list[Verdict]:
    """Drop rows whose positive beats the hard negative by `margin` or more (nothing to learn)."""
    verdicts = []
    for positive, negative in zip(positive_scores, negative_scores, strict=True):
        if negative is not None and positive - negative >= margin:
            verdicts.append(drop("too_easy", f"margin {positive - negative:.3f}"))
        else:
            verdicts.append(KEEP)
    return verdicts
