from __future__ import annotations

import numpy as np
import pytest

from embedcurate.pipeline.blend import BlendConfig, GeneratorConfig, TeacherConfig
from embedcurate.pipeline.generation.fielded import decode_field, field_token_limit
from embedcurate.pipeline.generation.filters import (
    KEEP,
    check_negative_differs,
    check_not_example,
    check_query_not_copied,
    check_schema,
    drop,
    exact_duplicates,
    near_duplicates,
    parse_json_answer,
    positive_ranks,
    round_trip,
    run_check,
    too_easy,
)
from embedcurate.pipeline.generation.prompts import load_template
from embedcurate.pipeline.generation.stage import Candidate, filter_candidates
from embedcurate.pipeline.generation.types import GenerationResult

SCHEMA = load_template("generate", "short-long").output_schema


def _answer(text: str, finish: str = "stop") -> GenerationResult:
    return GenerationResult(text=text, finish_reason=finish)


def test_parse_takes_the_first_json_value_after_the_opened_prefix() -> None:
    value, verdict = parse_json_answer(_answer('a", "b": "c"} and then more text'), '{"q": "')
    assert verdict.keep
    assert value == {"q": "a", "b": "c"}
    fenced = _answer('Sure!\n```json\n{"q": "x"}\n```')
    assert parse_json_answer(fenced, "") == ({"q": "x"}, KEEP)


def test_parse_failures_say_whether_the_model_ran_out_of_tokens() -> None:
    assert parse_json_answer(_answer('a", "b": "c', "length"), '{"q": "')[1].reason == (
        "json_truncated"
    )
    assert parse_json_answer(_answer('a" "b": "c"}'), '{"q": "')[1].reason == "json_invalid"
    assert parse_json_answer(_answer("no json here"), "")[1].reason == "json_invalid"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"user_query": "q", "positive_document": "p" * 30}, "schema_missing_field"),
        (["not", "an", "object"], "schema_not_object"),
        (
            {"user_query": "ab", "positive_document": 5, "hard_negative_document": "n" * 30},
            "schema_wrong_type",
        ),
        (
            {
                "user_query": "   ",
                "positive_document": "p" * 30,
                "hard_negative_document": "n" * 30,
            },
            "field_empty",
        ),
        (
            {
                "user_query": "q" * 501,
                "positive_document": "p" * 30,
                "hard_negative_document": "n" * 30,
            },
            "field_too_long",
        ),
        (
            {
                "user_query": "ok query",
                "positive_document": "p" * 30,
                "hard_negative_document": "n" * 30,
                "extra": 1,
            },
            None,
        ),
    ],
)
def test_schema_check_reasons(value: object, reason: str | None) -> None:
    assert check_schema(value, SCHEMA).reason == reason


def test_copies_are_caught() -> None:
    query = "how do I rotate a pdf page"
    assert check_query_not_copied(query, f"Steps: {query.upper()}, then save.").reason == (
        "query_in_document"
    )
    assert check_query_not_copied("rotate pdf", "To rotate a PDF open it in a viewer.").keep
    assert check_query_not_copied(query, query + "!").reason == "query_in_document"
    assert check_negative_differs("Same text.", "same text").reason == "negative_equals_positive"
    assert check_negative_differs("Same text.", None).keep
    example = (
        "Eating fruit in the evening is not harmful for most people. The body digests "
        "fruit sugar the same way at any hour, and what matters is the total energy."
    )
    near_copy = (
        "Eating fruit in the evening is not harmful for most people. The body digests "
        "fruit sugar the same way at any hour, so eat what you like."
    )
    assert check_not_example(near_copy, [example]).reason == "copied_example"
    assert check_not_example("A different text about trains and timetables.", [example]).keep


def test_duplicates_keep_the_first_occurrence() -> None:
    verdicts = exact_duplicates(["Hello, world", "hello world!", "other"], "duplicate_query")
    assert [v.reason for v in verdicts] == [None, "duplicate_query", None]
    embeddings = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0], [0.96, 0.28]], np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    reasons = [v.reason for v in near_duplicates(embeddings, threshold=0.99)]
    assert reasons == [None, "near_duplicate", None, None]


def test_round_trip_ranks_the_positive_among_all_documents() -> None:
    scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.3, 0.7], [0.5, 0.5, 0.1]], np.float32)
    assert positive_ranks(scores, [0, 1, 1]).tolist() == [1, 3, 1]  # ties favour the positive
    reasons = [v.reason for v in round_trip(scores, [0, 1, 1], top_k=2)]
    assert reasons == [None, "round_trip_failed", None]
    assert [v.reason for v in too_easy([0.9, 0.5], [0.1, None], margin=0.5)] == ["too_easy", None]


def test_a_check_that_cannot_run_drops_its_rows() -> None:
    def broken() -> list:
        raise RuntimeError("index unavailable")

    verdicts = run_check("round_trip", broken, 3)
    assert [v.reason for v in verdicts] == ["check_failed:round_trip"] * 3
    assert "index unavailable" in verdicts[0].detail
    assert run_check("short", lambda: [KEEP], 2)[0].reason == "check_failed:short"


def test_field_values_decode_as_json_string_bodies() -> None:
    assert decode_field(_answer(r"caf\u00e9 \"ok\"")) == ('café "ok"', KEEP)
    assert decode_field(_answer("dangling \\"))[1].reason == "json_invalid"
    assert decode_field(_answer("long", "length"))[1].reason == "json_truncated"
    assert field_token_limit({"maxLength": 30}, 320) == 10
    assert field_token_limit({}, 320) == 320


def _candidate(index: int, query: str, positive: str, negative: str) -> Candidate:
    candidate = Candidate("short-long", "Given a question, retrieve answers", 0, index, {}, index)
    candidate.fields = {"query": query, "positive": positive, "negative": negative, "label": None}
    return candidate


def test_teacher_checks_drop_near_duplicates_and_failed_round_trips() -> None:
    candidates = [
        _candidate(
            0,
            "how do glaciers form",
            "Glaciers form where snow outlasts the summer melt and compacts into ice.",
            "Deserts are dry regions with little rain.",
        ),
        _candidate(
            1,
            "how are glaciers formed?",
            "Snow that survives many summers turns into glacial ice under its own weight.",
            "Rivers carry sediment to the sea.",
        ),
        _candidate(
            2,
            "why does coffee keep you awake",
            "Pasta should be cooked in plenty of salted boiling water.",
            "Caffeine blocks adenosine, a molecule that makes you feel sleepy.",
        ),
        _candidate(
            3,
            "best way to store fresh basil",
            "Keep basil stems in a glass of water at room temperature.",
            "Thyme is a hardy herb that grows well in pots.",
        ),
    ]
    candidates[3].verdict = drop("json_invalid")  # already dropped: not re-judged
    cfg = GeneratorConfig(round_trip_top_k=2, near_duplicate_threshold=0.8)
    filter_candidates(candidates, BlendConfig(name="t", generator=cfg).teacher, cfg)
    assert [c.verdict.reason for c in candidates] == [
        None,
        "near_duplicate",
        "round_trip_failed",
        "json_invalid",
    ]


def test_rows_are_dropped_when_the_teacher_cannot_load(tmp_path) -> None:
    candidates = [_candidate(0, "q one", "doc one about things", "neg one about stuff")]
    cfg = GeneratorConfig()
    blend = BlendConfig(
        name="t", generator=cfg, teacher=TeacherConfig(model=str(tmp_path / "no-such-model"))
    )
    filter_candidates(candidates, blend.teacher, cfg)
    assert candidates[0].verdict.reason == "check_failed:teacher"
