from __future__ import annotations

import codecs
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedcurate.pipeline.atomic import temp_path_for
from embedcurate.pipeline.blend import BlendConfig, SourcesStageConfig, parse_blend
from embedcurate.pipeline.errors import ConfigError, InputError
from embedcurate.pipeline.instructions import load_instruction_table
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.shards import read_shards, validate_shards
from embedcurate.pipeline.sources.stage import run_sources

TOPICS = {
    "space": ["The probe reached orbit around Jupiter", "A comet passed close to the Sun"],
    "food": ["Bake the bread for forty minutes", "Simmer the soup with fresh thyme"],
    "sport": ["The keeper saved a late penalty", "She won the marathon in record time"],
}


# ---- small data the tests write -----------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_beir(root: Path) -> Path:
    """50 documents, 20 judged queries (q00 has two positives, q01 a judged non-relevant doc)."""
    docs = [
        {"_id": f"d{i:02d}", "title": f"Topic {i}", "text": f"Document {i} explains fact {i}."}
        for i in range(50)
    ]
    queries = [{"_id": f"q{i:02d}", "text": f"what is fact {i}?"} for i in range(21)]
    qrels = [(f"q{i:02d}", f"d{i:02d}", 1) for i in range(20)]
    qrels += [("q00", "d20", 2), ("q01", "d21", 0)]
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", queries)
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in qrels)]
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def blend_of(tmp_path: Path, *sources: dict[str, Any], **top: Any) -> BlendConfig:
    data = {"name": "t", "seed": 5, "sources": list(sources), **top}
    return parse_blend(data, source="test", base_dir=tmp_path)


def run(tmp_path: Path, blend: BlendConfig) -> tuple[Path, Any]:
    out = tmp_path / "out"
    return out, run_sources(out, SourcesStageConfig.of(blend))


def pairs_rows(out: Path, name: str) -> list[dict[str, Any]]:
    return read_shards(out / "pairs" / name, "pairs").to_pylist()


def lines_in(path: Path) -> int:
    return len(path.read_bytes().splitlines())


# ---- BEIR -----------------------------------------------------------------------------------


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return make_beir(tmp_path / "scifact")


def test_beir_gives_a_row_per_positive_with_every_positive_id_and_writes_the_corpus(
    tmp_path, beir_dir
) -> None:
    blend = blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": str(beir_dir)})
    out, report = run(tmp_path, blend)
    rows = pairs_rows(out, "sf")
    assert len(rows) == 21  # 20 + q00's second positive; the score-0 judgment is no row
    q00 = [r for r in rows if r["query_id"] == "q00"]
    assert sorted(r["positive_id"] for r in q00) == ["d00", "d20"]
    assert all(r["positive_ids"] == ["d00", "d20"] for r in q00)
    assert q00[0]["positive"] == "Topic 0 Document 0 explains fact 0."
    assert q00[0]["query"] == "what is fact 0?"
    sci_fact = load_instruction_table().get("SciFact")
    assert {r["instruction"] for r in rows} == {sci_fact.definition}
    assert {(r["task_name"], r["task_type"], r["stage"], r["symmetric"]) for r in rows} == {
        ("SciFact", "retrieval", 1, False)
    }
    q01 = next(r for r in rows if r["query_id"] == "q01")
    assert q01["given_negatives"] == ["Topic 21 Document 21 explains fact 21."]
    assert len({r["example_id"] for r in rows}) == 21
    assert q00[0]["provenance"].startswith(str(beir_dir / "qrels" / "train.tsv") + ":")
    corpus = read_shards(out / "corpus" / "sf", "corpus")
    assert corpus.num_rows == 50
    assert corpus.column("title").to_pylist()[3] == "Topic 3"
    counts = report.sources["sf"]
    # 22 judgments: 21 rows, and q01's score-0 judgment, which is q01's given negative
    assert (counts.num_in, counts.num_kept, counts.num_dropped) == (22, 21, 1)
    assert counts.dropped == {"judged_not_relevant": 1}
    assert validate_shards(out / "pairs" / "sf") == []
    saved = json.loads((out / "pairs" / "report.json").read_text())
    assert saved["sources"]["sf"]["num_kept"] == 21
    own = json.loads((out / "pairs" / "sf" / "report.json").read_text())
    assert own["details"]["source"]["corpus_dir"] == "corpus/sf"  # relative to the run folder
    assert own["out_dir"] == "."


def test_a_rerun_writes_the_same_shard_bytes(tmp_path, beir_dir) -> None:
    blend = blend_of(
        tmp_path,
        {"name": "sf", "kind": "beir", "path": str(beir_dir), "max_rows": 9},
        output={"rows_per_shard": 4},
    )
    out, _ = run(tmp_path, blend)
    first = [e.sha256 for e in read_manifest(out / "pairs" / "sf").shards]
    corpus_first = [e.sha256 for e in read_manifest(out / "corpus" / "sf").shards]
    run(tmp_path, blend)
    assert [e.sha256 for e in read_manifest(out / "pairs" / "sf").shards] == first
    assert [e.sha256 for e in read_manifest(out / "corpus" / "sf").shards] == corpus_first
    assert len(first) == 3


def _append(path: Path, data: bytes) -> int:
    """Append `data` as the file's next line; returns that line's number."""
    line = lines_in(path) + 1
    with open(path, "ab") as handle:
        handle.write(data + b"\n")
    return line


BAD_BEIR_INPUT = [
    ("qrels/train.tsv", b"q02\tnope\t1", "unknown_document"),
    ("qrels/train.tsv", b"q99\td02\t1", "unknown_query"),
    ("qrels/train.tsv", b"q02\td02\t1", "duplicate_id"),
    ("corpus.jsonl", b'{"_id": "d50", "title": "", "text": "   "}', "empty_text"),
    ("corpus.jsonl", b'{"_id": "d03", "title": "again", "text": "dup"}', "duplicate_id"),
    ("corpus.jsonl", b'{"_id": "d51", "text": "caf\xe9 in latin-1"}', "invalid_utf8"),
    ("queries.jsonl", b'{"_id": "q50", "text": "unclosed', "invalid_json"),
    ("corpus.jsonl", b'{"_id": "d52", "title": "no text"}', "missing_field"),
]


@pytest.mark.parametrize(("file", "line", "reason"), BAD_BEIR_INPUT)
def test_bad_beir_input_is_an_error_naming_file_and_line(
    tmp_path, beir_dir, file: str, line: bytes, reason: str
) -> None:
    line_no = _append(beir_dir / file, line)
    blend = blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": str(beir_dir)})
    with pytest.raises(InputError) as info:
        run(tmp_path, blend)
    assert info.value.path == str(beir_dir / file)
    assert info.value.row == line_no
    assert reason in str(info.value)
    assert f"{beir_dir / file}, line {line_no}" in str(info.value)


@pytest.mark.parametrize(("file", "line", "reason"), BAD_BEIR_INPUT)
def test_bad_beir_input_under_drop_is_counted_and_the_rest_kept(
    tmp_path, beir_dir, file: str, line: bytes, reason: str
) -> None:
    _append(beir_dir / file, line)
    blend = blend_of(
        tmp_path, {"name": "sf", "kind": "beir", "path": str(beir_dir), "on_error": "drop"}
    )
    out, report = run(tmp_path, blend)
    counts = report.sources["sf"]
    texts = report.details["texts"]["sf"]
    if file.startswith("qrels"):  # judgments are the source's records
        assert dict(counts.dropped) == {reason: 1, "judged_not_relevant": 1}
        assert texts["dropped"] == {}
    else:  # documents and queries are counted apart, in the stage's details
        assert dict(counts.dropped) == {"judged_not_relevant": 1}
        assert texts["dropped"] == {reason: 1}
        assert texts["num_in"] == texts["num_kept"] + 1
    assert counts.num_in == counts.num_kept + counts.num_dropped
    assert len(pairs_rows(out, "sf")) == 21


def test_a_missing_beir_file_is_named(tmp_path, beir_dir) -> None:
    (beir_dir / "qrels" / "train.tsv").unlink()
    blend = blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": str(beir_dir)})
    with pytest.raises(InputError, match=r"qrels/train\.tsv: BEIR qrels file not found"):
        run(tmp_path, blend)


# ---- flat retrieval files --------------------------------------------------------------------


def test_jsonl_retrieval_groups_positives_by_query_and_keeps_given_negatives(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"q": "who wrote it", "p": "Ann wrote it.", "n": ["Bob read it."]},
            {"q": "who wrote it", "p": ["Ann is the author.", "Ann wrote it."], "n": []},
            {"q": "when was it", "p": "In 1999.", "n": ["Ann wrote it.", "In 2001."]},
        ],
    )
    source = {
        "name": "qa",
        "kind": "jsonl",
        "path": str(path),
        "task": "NQ",
        "columns": {"query": "q", "positive": "p", "negatives": "n"},
    }
    out, report = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "qa")
    wrote = [r for r in rows if r["query"] == "who wrote it"]
    assert sorted(r["positive"] for r in wrote) == ["Ann is the author.", "Ann wrote it."]
    assert all(len(r["positive_ids"]) == 2 for r in wrote)
    assert {r["positive_id"] for r in wrote} == set(wrote[0]["positive_ids"])
    assert wrote[0]["given_negatives"] == ["Bob read it."]
    when = next(r for r in rows if r["query"] == "when was it")
    assert when["given_negatives"] == ["Ann wrote it.", "In 2001."]  # another query's positive
    # three lines, each kept; line 2 repeats one positive, which is noted, not a dropped line
    counts = report.sources["qa"]
    assert (counts.num_in, counts.num_kept, counts.num_dropped, counts.num_rows) == (3, 3, 0, 3)
    assert report.details["notes"]["qa"]["positive_duplicate_pair"] == 1
    corpus = read_shards(out / "corpus" / "qa", "corpus").column("text").to_pylist()
    assert sorted(corpus) == sorted(
        ["Ann wrote it.", "Ann is the author.", "In 1999.", "Bob read it.", "In 2001."]
    )


def test_a_jsonl_line_without_a_mapped_column_names_its_line(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "a?", "answer": "Ay."},
            {"question": "b?"},
            {"question": "c?", "answer": "Cee"},
        ],
    )
    source = {
        "name": "qa",
        "kind": "jsonl",
        "path": str(path),
        "task": "NQ",
        "columns": {"query": "question", "positive": "answer"},
    }
    with pytest.raises(InputError) as info:
        run(tmp_path, blend_of(tmp_path, source))
    assert f"{path}, line 2: missing_column" in str(info.value)
    assert "'answer'" in str(info.value)
    out, report = run(tmp_path, blend_of(tmp_path, {**source, "on_error": "drop"}))
    assert dict(report.sources["qa"].dropped) == {"missing_column": 1}
    assert len(pairs_rows(out, "qa")) == 2


def test_explicit_query_and_positive_ids_and_duplicate_ids(tmp_path) -> None:
    records = [
        {"qid": "1", "query": "alpha?", "pid": "a", "positive": "Alpha doc."},
        {"qid": "1", "query": "alpha?", "pid": "b", "positive": "Another alpha doc."},
        {"qid": "2", "query": "beta?", "pid": "c", "positive": "Beta doc."},
    ]
    path = write_jsonl(tmp_path / "ids.jsonl", records)
    source = {
        "name": "ids",
        "kind": "jsonl",
        "path": str(path),
        "task": "MSMARCO",
        "columns": {"query_id": "qid", "positive_id": "pid"},
    }
    out, _ = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "ids")
    assert {(r["query_id"], r["positive_id"]) for r in rows} == {("1", "a"), ("1", "b"), ("2", "c")}
    assert next(r for r in rows if r["positive_id"] == "a")["positive_ids"] == ["a", "b"]


def test_parquet_source_and_a_column_the_file_lacks(tmp_path) -> None:
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["x?", "y?"], "context": ["X is.", "Y is."]}), path)
    source = {
        "name": "pq",
        "kind": "parquet",
        "path": str(path),
        "task": "SQuAD",
        "columns": {"query": "question", "positive": "context"},
    }
    out, _ = run(tmp_path, blend_of(tmp_path, source))
    assert [r["positive"] for r in pairs_rows(out, "pq")] == ["X is.", "Y is."]
    wrong = {**source, "columns": {"query": "question", "positive": "passage"}}
    with pytest.raises(InputError) as info:
        run(tmp_path, blend_of(tmp_path, wrong))
    assert str(path) in str(info.value)
    assert "'passage'" in str(info.value)
    assert "question, context" in str(info.value)


def test_columns_a_task_type_does_not_use_are_refused(tmp_path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"query": "q", "positive": "p"}])
    source = {"name": "a", "kind": "jsonl", "path": str(path), "task": "NQ"}
    with pytest.raises(ConfigError, match="columns score are not used by a retrieval source"):
        run(tmp_path, blend_of(tmp_path, {**source, "columns": {"score": "s"}}))


# ---- classification and clustering -----------------------------------------------------------


def write_topics_csv(path: Path, extra_lines: str = "") -> Path:
    lines = ["text,label"]
    for label, texts in TOPICS.items():
        lines += [f'"{text}",{label}' for text in texts]
    lines += [
        f"Topic sentence number {i} about {label},{label}" for i in range(4) for label in TOPICS
    ]
    path.write_text("\n".join(lines) + "\n" + extra_lines, encoding="utf-8")
    return path


def topics_source(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "topics",
        "kind": "csv",
        "path": str(path),
        "task": "DemoTopicsClassification",
        "columns": {"query": "text", "label": "label"},
        **extra,
    }


def test_classification_rows_are_example_based_with_other_label_negatives(tmp_path) -> None:
    path = write_topics_csv(tmp_path / "topics.csv", "A lonely sentence,weather\n")
    blend = blend_of(tmp_path, topics_source(path), mining={"num_negatives": 2})
    out, report = run(tmp_path, blend)
    rows = pairs_rows(out, "topics")
    assert len(rows) == 18
    label_of = {r["query"]: r["label"] for r in rows} | {"A lonely sentence": "weather"}
    for row in rows:
        assert row["positive"] != row["query"]
        assert label_of[row["positive"]] == row["label"]
        assert row["positive_ids"] == [row["positive_id"]]
        negatives = row["given_negatives"]
        assert len(negatives) == 8  # 4 x mining.num_negatives
        assert len(set(negatives)) == 8
        assert all(label_of[n] != row["label"] for n in negatives)
        assert {label_of[n] for n in negatives} == {*TOPICS, "weather"} - {row["label"]}
        assert (row["task_type"], row["stage"], row["symmetric"]) == ("classification", 2, True)
    assert dict(report.sources["topics"].dropped) == {"singleton_label": 1}
    assert not (out / "corpus" / "topics").exists()
    again, _ = run(tmp_path, blend)
    assert pairs_rows(again, "topics") == rows
    reseeded = blend_of(tmp_path, topics_source(path), seed=6, mining={"num_negatives": 2})
    other, _ = run(tmp_path, reseeded)
    assert [r["positive"] for r in pairs_rows(other, "topics")] != [r["positive"] for r in rows]


def test_clustering_uses_the_same_example_based_rows(tmp_path) -> None:
    path = write_topics_csv(tmp_path / "topics.csv")
    source = {**topics_source(path), "name": "clusters", "task": "TwentyNewsgroupsClustering"}
    out, _ = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "clusters")
    assert {r["task_type"] for r in rows} == {"clustering"}
    assert all(r["label"] in TOPICS for r in rows)


def test_a_csv_header_missing_a_column_names_the_file_and_the_columns(tmp_path) -> None:
    path = write_topics_csv(tmp_path / "topics.csv")
    source = {**topics_source(path), "columns": {"query": "text", "label": "category"}}
    with pytest.raises(InputError) as info:
        run(tmp_path, blend_of(tmp_path, source))
    message = str(info.value)
    assert f"{path}, line 1" in message
    assert "'category'" in message
    assert "text, label" in message


def test_csv_empty_text_and_invalid_utf8_name_their_lines(tmp_path) -> None:
    path = write_topics_csv(tmp_path / "topics.csv")
    empty_line = _append(path, b'"   ",food')
    with pytest.raises(InputError, match=rf"topics\.csv, line {empty_line}: empty_text"):
        run(tmp_path, blend_of(tmp_path, topics_source(path)))
    path = write_topics_csv(tmp_path / "topics2.csv")
    bad_line = _append(path, b"Cr\xe8me br\xfbl\xe9e,food")
    with pytest.raises(InputError, match=rf"topics2\.csv, line {bad_line}: invalid_utf8"):
        run(tmp_path, blend_of(tmp_path, topics_source(path)))
    out, report = run(tmp_path, blend_of(tmp_path, topics_source(path, on_error="drop")))
    assert dict(report.sources["topics"].dropped) == {"invalid_utf8": 1}
    assert len(pairs_rows(out, "topics")) == 18


def test_duplicate_example_ids_are_bad_input(tmp_path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id,text,label\n1,aa one,x\n2,aa two,x\n1,bb one,y\n3,bb two,y\n")
    source = {
        "name": "ids",
        "kind": "csv",
        "path": str(path),
        "task": "Banking77Classification",
        "columns": {"query": "text", "label": "label", "query_id": "id"},
    }
    with pytest.raises(InputError, match=r"ids\.csv, line 4: duplicate_id"):
        run(tmp_path, blend_of(tmp_path, source))


# ---- STS ------------------------------------------------------------------------------------


def write_sts_tsv(path: Path) -> Path:
    """STS-B's release layout: tab-separated, no header, unbalanced quotes in sentences."""
    rows = [
        (
            "main",
            "a",
            "2012",
            "1",
            "5.000",
            'A plane is taking "off.',
            "An air plane is taking off.",
        ),
        ("main", "a", "2012", "2", "4.200", "A man plays a flute.", "A man is playing a flute."),
        ("main", "a", "2012", "3", "1.000", "A cat sleeps.", "Stocks fell sharply today."),
        ("main", "a", "2012", "4", "4.600", "A man plays a flute.", "Someone plays the flute."),
        ("main", "a", "2012", "5", "4.000", "A man is playing a flute.", "A man plays a flute."),
    ]
    path.write_text("\n".join("\t".join(r) + "\textra\tfields" for r in rows) + "\n")
    return path


def sts_source(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "sts",
        "kind": "csv",
        "path": str(path),
        "task": "STSBenchmark",
        "delimiter": "\t",
        "header": False,
        "quoting": False,
        "columns": {"query": "5", "positive": "6", "score": "4"},
        **extra,
    }


def test_sts_pairs_at_or_above_threshold_give_both_directions(tmp_path) -> None:
    path = write_sts_tsv(tmp_path / "sts-train.csv")
    out, report = run(tmp_path, blend_of(tmp_path, sts_source(path)))
    rows = pairs_rows(out, "sts")
    pairs = {(r["query"], r["positive"]): r for r in rows}
    assert len(rows) == 6
    assert ('A plane is taking "off.', "An air plane is taking off.") in pairs
    assert ("An air plane is taking off.", 'A plane is taking "off.') in pairs
    flute = pairs[("A man plays a flute.", "A man is playing a flute.")]
    assert flute["score"] == pytest.approx(0.84)
    assert flute["symmetric"] is True
    assert sorted(flute["positive_ids"]) == sorted(
        [
            pairs[("A man plays a flute.", "Someone plays the flute.")]["positive_id"],
            flute["positive_id"],
        ]
    )
    assert dict(report.sources["sts"].dropped) == {"below_sts_threshold": 1, "duplicate_pair": 1}
    counts = report.sources["sts"]
    assert counts.num_in == counts.num_kept + sum(counts.dropped.values())  # reverse rows count
    corpus = read_shards(out / "corpus" / "sts", "corpus").column("text").to_pylist()
    assert "Stocks fell sharply today." in corpus  # a low-scoring pair's sentence is in the pool


def test_sts_threshold_uses_the_file_scale(tmp_path) -> None:
    path = tmp_path / "scaled.csv"
    path.write_text("s1,s2,score\nA dog runs.,A dog is running.,0.9\nA dog runs.,It rains.,0.5\n")
    source = {
        "name": "unit",
        "kind": "csv",
        "path": str(path),
        "task": "STS12",
        "columns": {"query": "s1", "positive": "s2", "score": "score"},
        "score_max": 1.0,
        "sts_threshold": 0.8,
    }
    out, _ = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "unit")
    assert len(rows) == 2
    assert rows[0]["score"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("score", "reason"), [("7.5", "score_out_of_range"), ("high", "invalid_score")]
)
def test_a_bad_sts_score_names_its_line(tmp_path, score: str, reason: str) -> None:
    path = write_sts_tsv(tmp_path / "sts.csv")
    line = _append(path, f"main\ta\t2012\t9\t{score}\tOne.\tTwo.".encode())
    with pytest.raises(InputError, match=rf"sts\.csv, line {line}: {reason}"):
        run(tmp_path, blend_of(tmp_path, sts_source(path)))


def test_keep_where_filters_rows_and_counts_them(tmp_path) -> None:
    path = tmp_path / "SICK.txt"
    path.write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set\r\n"
        "1\tKids play in a yard.\tChildren play in a yard.\t4.5\tTRAIN\r\n"
        "2\tA man cooks.\tA man is cooking.\t4.8\tTEST\r\n"
    )
    source = {
        "name": "sick",
        "kind": "csv",
        "path": str(path),
        "task": "sick",
        "keep_where": {"SemEval_set": "TRAIN"},
        "columns": {"query": "sentence_A", "positive": "sentence_B", "score": "relatedness_score"},
    }
    out, report = run(tmp_path, blend_of(tmp_path, source))
    assert {r["query"] for r in pairs_rows(out, "sick")} == {
        "Kids play in a yard.",
        "Children play in a yard.",
    }
    assert dict(report.sources["sick"].dropped) == {"filtered": 1}
    assert {r["task_name"] for r in pairs_rows(out, "sick")} == {"SICK-R"}


# ---- Hugging Face datasets from local files ---------------------------------------------------


def test_hf_source_by_local_path_with_class_label_names(tmp_path) -> None:
    import datasets

    texts = [text for group in TOPICS.values() for text in group]
    labels = [i for i, group in enumerate(TOPICS.values()) for _ in group]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(TOPICS))}
    )
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)}
    ).save_to_disk(str(saved))
    source = {
        "name": "hfcls",
        "kind": "hf",
        "path": str(saved),
        "task": "DemoTopicsClassification",
        "columns": {"query": "text", "label": "label"},
    }
    out, _ = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "hfcls")
    assert len(rows) == 6
    assert {r["label"] for r in rows} == set(TOPICS)

    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "which x?", "answer": "This x."}])
    hf_file = {
        "name": "hfqa",
        "kind": "hf",
        "path": str(qa),
        "task": "TriviaQA",
        "columns": {"query": "question", "positive": "answer"},
    }
    out, _ = run(tmp_path, blend_of(tmp_path, hf_file))
    assert [(r["query"], r["positive"]) for r in pairs_rows(out, "hfqa")] == [
        ("which x?", "This x.")
    ]


# ---- caps, weights and the seed ----------------------------------------------------------------


def many_pairs(tmp_path: Path, name: str, count: int) -> dict[str, Any]:
    records = [
        {"query": f"{name} question {i}?", "positive": f"{name} answer {i}."} for i in range(count)
    ]
    path = write_jsonl(tmp_path / f"{name}.jsonl", records)
    return {"name": name, "kind": "jsonl", "path": str(path), "task": "MSMARCO"}


def test_max_rows_and_stage_budget_by_weight_choose_rows_deterministically(tmp_path) -> None:
    sources = [
        {**many_pairs(tmp_path, "big", 60), "weight": 3.0},
        {**many_pairs(tmp_path, "small", 60), "weight": 1.0},
        {**many_pairs(tmp_path, "capped", 60), "max_rows": 5, "weight": 1.0},
    ]
    blend = blend_of(tmp_path, *sources, output={"max_rows_per_stage": {1: 45}})
    out, report = run(tmp_path, blend)
    kept = {name: len(pairs_rows(out, name)) for name in ("big", "small", "capped")}
    assert kept == {"big": 30, "small": 10, "capped": 5}
    assert dict(report.sources["capped"].dropped) == {"max_rows": 55}
    assert dict(report.sources["big"].dropped) == {"stage_budget": 30}
    first = [r["example_id"] for r in pairs_rows(out, "big")]
    run(tmp_path, blend)
    assert [r["example_id"] for r in pairs_rows(out, "big")] == first
    reseeded = blend_of(tmp_path, *sources, seed=99, output={"max_rows_per_stage": {1: 45}})
    run(tmp_path, reseeded)
    assert [r["example_id"] for r in pairs_rows(out, "big")] != first
    counts = Counter(r["source"] for name in kept for r in pairs_rows(out, name))
    assert sum(counts.values()) == 45


HUB_README = """---
configs:
- config_name: corpus
  data_files:
  - split: corpus
    path: corpus.jsonl
- config_name: queries
  data_files:
  - split: queries
    path: queries.jsonl
- config_name: default
  data_files:
  - split: train
    path: qrels/train.jsonl
---
"""


def test_beir_in_the_mteb_hub_layout_reads_through_datasets(tmp_path) -> None:
    """The hub-id path, on a local repository laid out as MTEB's BEIR mirrors are."""
    repo = make_beir(tmp_path / "mteb-scifact")
    tsv_lines = (repo / "qrels" / "train.tsv").read_text().splitlines()[1:]
    judgments = [
        dict(zip(("query-id", "corpus-id"), line.split("\t")[:2], strict=True))
        | {"score": int(line.split("\t")[2])}
        for line in tsv_lines
    ]
    write_jsonl(repo / "qrels" / "train.jsonl", judgments)
    (repo / "qrels" / "train.tsv").unlink()
    (repo / "README.md").write_text(HUB_README)
    source = {"name": "hubsf", "kind": "beir", "hub_id": str(repo), "task": "SciFact"}
    out, report = run(tmp_path, blend_of(tmp_path, source))
    rows = pairs_rows(out, "hubsf")
    assert len(rows) == 21
    assert next(r for r in rows if r["query_id"] == "q00")["positive_ids"] == ["d00", "d20"]
    assert read_shards(out / "corpus" / "hubsf", "corpus").num_rows == 50
    assert report.sources["hubsf"].num_in == 22


# ---- every record counted: headers, byte-order marks, empty sources, in = kept + dropped ----

BOM = codecs.BOM_UTF8


def _qrels(beir_dir: Path) -> Path:
    return beir_dir / "qrels" / "train.tsv"


def _drop_header(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    return lines[1:]


def test_qrels_without_a_header_keep_their_first_judgment(tmp_path) -> None:
    beir = make_beir(tmp_path / "scifact")
    judgments = _drop_header(_qrels(beir))
    assert judgments[0] == "q00\td00\t1"
    _, report = run(tmp_path, blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": beir}))
    counts = report.sources["sf"]
    assert counts.num_in == len(judgments) == 22
    assert (counts.num_kept, dict(counts.dropped)) == (21, {"judged_not_relevant": 1})
    rows = pairs_rows(tmp_path / "out", "sf")
    assert {r["positive_id"] for r in rows if r["query_id"] == "q00"} == {"d00", "d20"}


def test_a_qrels_header_is_read_by_its_names_in_any_order(tmp_path) -> None:
    beir = make_beir(tmp_path / "scifact")
    judgments = [line.split("\t") for line in _drop_header(_qrels(beir))]
    lines = ["score\tquery_id\tdoc_id"] + [f"{s}\t{q}\t{d}" for q, d, s in judgments]
    _qrels(beir).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, report = run(tmp_path, blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": beir}))
    assert (report.sources["sf"].num_in, report.sources["sf"].num_kept) == (22, 21)
    assert len(pairs_rows(out, "sf")) == 21


def test_a_qrels_first_line_that_is_neither_header_nor_judgment_is_named(tmp_path) -> None:
    beir = make_beir(tmp_path / "scifact")
    text = _qrels(beir).read_text(encoding="utf-8")
    _qrels(beir).write_text(text.replace("query-id\t", "question\t", 1), encoding="utf-8")
    with pytest.raises(InputError) as info:
        run(tmp_path, blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": beir}))
    assert info.value.path == str(_qrels(beir))
    assert info.value.row == 1
    assert "query-id, corpus-id, score" in str(info.value)
    assert "missing query-id" in str(info.value)


def _with_bom(path: Path) -> None:
    path.write_bytes(BOM + path.read_bytes())


def test_a_byte_order_mark_is_accepted_in_every_beir_file(tmp_path) -> None:
    beir = make_beir(tmp_path / "scifact")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        _with_bom(beir / name)
    out, report = run(tmp_path, blend_of(tmp_path, {"name": "sf", "kind": "beir", "path": beir}))
    assert (report.sources["sf"].num_in, report.sources["sf"].num_kept) == (22, 21)
    corpus = read_shards(out / "corpus" / "sf", "corpus")
    assert corpus.column("doc_id").to_pylist()[0] == "d00"


def test_a_byte_order_mark_is_accepted_in_jsonl_and_csv_sources(tmp_path) -> None:
    jsonl = many_pairs(tmp_path, "qa", 3)
    _with_bom(Path(jsonl["path"]))
    sts = write_sts_tsv(tmp_path / "sts.tsv")  # no header: the BOM would sit in a value
    _with_bom(sts)
    topics = tmp_path / "topics.csv"
    topics.write_bytes(BOM + b"text,label\nRockets fly,space\nComets glow,space\nBread,food\n")
    topic_source = {
        "name": "topics",
        "kind": "csv",
        "path": str(topics),
        "task": "DemoTopics",
        "task_type": "classification",
        "columns": {"query": "text", "label": "label"},
        "on_error": "drop",
    }
    out, report = run(tmp_path, blend_of(tmp_path, jsonl, sts_source(sts), topic_source))
    assert report.sources["qa"].num_kept == 3
    sts_rows = pairs_rows(out, "sts")
    assert ('A plane is taking "off.', "An air plane is taking off.") in {
        (r["query"], r["positive"]) for r in sts_rows
    }
    assert {r["label"] for r in pairs_rows(out, "topics")} == {"space"}


@pytest.mark.parametrize(
    ("keep_where", "reason"),
    [({"query": "no such text"}, "filtered 3"), ({}, None)],
    ids=["all-filtered", "empty-file"],
)
def test_a_source_that_yields_no_rows_fails_naming_it(tmp_path, keep_where, reason) -> None:
    source = {**many_pairs(tmp_path, "qa", 3), "keep_where": keep_where}
    if reason is None:
        Path(source["path"]).write_text("", encoding="utf-8")
    other = many_pairs(tmp_path, "fine", 2)
    blend = blend_of(tmp_path, other, source)
    with pytest.raises(InputError) as info:
        run(tmp_path, blend)
    message = str(info.value)
    assert info.value.path == source["path"]
    assert "source 'qa' yields no rows" in message
    assert "keep_where" in message
    if reason:
        assert reason in message


def _mixed_blend(tmp_path: Path):
    beir = make_beir(tmp_path / "scifact")
    with open(beir / "corpus.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "t1", "title": "Only a title", "text": ""}) + "\n")
        handle.write(json.dumps({"_id": "t2", "title": "", "text": "  "}) + "\n")
    qa = tmp_path / "qa.jsonl"
    records = [
        {"q": "who wrote it", "p": ["Ann wrote it.", "Ann is the author."]},
        {"q": "who wrote it", "p": ["Ann wrote it.", "Ann signed it."]},  # one repeat
        {"q": "who wrote it", "p": "Ann wrote it."},  # nothing new: a dropped line
        {"q": "same", "p": "same"},
        {"q": "", "p": "no query"},
    ]
    qa.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return blend_of(
        tmp_path,
        {"name": "sf", "kind": "beir", "path": beir, "on_error": "drop", "max_rows": 15},
        {
            "name": "qa",
            "kind": "jsonl",
            "path": qa,
            "task": "NQ",
            "columns": {"query": "q", "positive": "p"},
            "on_error": "drop",
        },
        sts_source(write_sts_tsv(tmp_path / "sts.tsv"), max_rows=3),
    )


def test_records_in_equal_kept_plus_dropped_per_source_with_rows_apart(tmp_path) -> None:
    out, report = run(tmp_path, _mixed_blend(tmp_path))
    saved = StageReport.load(out / "pairs" / "report.json")
    for counts in (report.sources, saved.sources):
        for name, source in counts.items():
            assert source.num_in == source.num_kept + source.num_dropped, (name, source)
    sts = report.sources["sts"]
    # 5 pairs: 1 below the threshold, 1 repeat; 3 kept give 6 rows, of which max_rows keeps 3
    assert sts.num_in == 5
    assert sts.dropped["below_sts_threshold"] == 1
    assert sts.dropped["duplicate_pair"] == 1
    assert sts.num_rows == len(pairs_rows(out, "sts")) == 3
    assert sts.num_kept + sts.dropped["max_rows"] == 3
    assert 2 <= sts.num_kept <= 3  # three rows span two or three pairs
    qa = report.sources["qa"]
    assert (qa.num_in, qa.num_kept, qa.num_rows) == (5, 2, 3)
    assert dict(qa.dropped) == {
        "duplicate_pair": 1,
        "query_equals_positive": 1,
        "empty_text": 1,
    }
    assert report.details["notes"]["qa"]["positive_duplicate_pair"] == 1
    sf = report.sources["sf"]
    assert (sf.num_in, sf.num_kept, sf.num_rows) == (22, 15, 15)
    assert dict(sf.dropped) == {"judged_not_relevant": 1, "max_rows": 6}
    assert report.num_rows == 3 + 3 + 15
    assert saved.to_dict()["num_rows"] == report.num_rows


def test_documents_with_an_empty_body_are_counted(tmp_path) -> None:
    _, report = run(tmp_path, _mixed_blend(tmp_path))
    texts = report.details["texts"]["sf"]
    assert texts["num_title_only_docs"] == 1  # t1: kept, as its title
    assert texts["num_docs"] == 51
    assert texts["dropped"] == {"empty_text": 1}  # t2: nothing at all
    assert texts["num_in"] == texts["num_kept"] + texts["num_dropped"] == 51 + 21 + 1


def test_concurrent_source_tasks_write_only_their_own_files(tmp_path) -> None:
    """The flow runs each source as a task in one run folder: no shared summary, no clash."""
    blend = blend_of(tmp_path, *(many_pairs(tmp_path, f"s{i}", 40) for i in range(4)))
    out = tmp_path / "out"
    errors: list[BaseException] = []

    def one(source) -> None:
        try:
            for _ in range(3):
                run_sources(out, SourcesStageConfig.of(blend).only([source]))
        except BaseException as exc:  # collected, then asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in blend.sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for source in blend.sources:
        own = StageReport.load(out / "pairs" / source.name / "report.json")
        assert list(own.sources) == [source.name]
        assert own.sources[source.name].num_kept == 40
    # the summary is rebuilt from every source's own report, whichever task finished last
    summary = StageReport.load(out / "pairs" / "report.json")
    assert sorted(summary.sources) == ["s0", "s1", "s2", "s3"]
    assert (summary.num_in, summary.num_kept) == (160, 160)
    assert sorted(summary.details["sources"]) == ["s0", "s1", "s2", "s3"]


def test_threads_writing_one_file_get_their_own_temporary_names(tmp_path) -> None:
    target = tmp_path / "report.json"
    names: list[Path] = []
    thread = threading.Thread(target=lambda: names.append(temp_path_for(target)))
    thread.start()
    thread.join()
    assert names[0] != temp_path_for(target)
