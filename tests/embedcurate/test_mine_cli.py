from __future__ import annotations

import json
from pathlib import Path

from embedcurate.pipeline.shards import read_shards, validate_shards
from tests.embedcurate.test_cli import run_cli

TOPICS = ["glacier ice snow", "coffee caffeine sleep", "rocket orbit launch", "bread flour oven"]


def write_beir(folder: Path, num_docs: int = 30, num_queries: int = 8) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as corpus:
        for i in range(num_docs):
            text = f"{TOPICS[i % 4]} passage {i} with {TOPICS[(i + 1) % 4].split()[1]}"
            corpus.write(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as queries:
        for i in range(num_queries):
            queries.write(json.dumps({"_id": f"q{i}", "text": f"{TOPICS[i % 4]} {i}?"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(num_queries)]
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


MINE_OPTIONS = [
    "--teacher",
    "hashing:64",
    "--num-negatives",
    "2",
    "--range-max",
    "10",
    "--instruction",
    "Given a question, retrieve passages that answer it",
]


def test_mine_needs_exactly_one_input(tmp_path) -> None:
    result = run_cli("mine", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "exactly one of --beir DIR or --pairs FILE" in result.stderr


def test_mine_refuses_a_bad_rule(tmp_path) -> None:
    beir = write_beir(tmp_path / "beir")
    result = run_cli("mine", "--beir", str(beir), "--out", str(tmp_path / "o"), "--rule", "top:3")
    assert result.returncode == 1
    assert "percpos:P, marginpos:M, abs:T or none" in result.stderr


def test_mine_beir_writes_mined_and_train_shards(tmp_path) -> None:
    beir = write_beir(tmp_path / "mini")
    out = tmp_path / "out"
    result = run_cli(
        "mine", "--beir", str(beir), "--split", "train", "--out", str(out), *MINE_OPTIONS
    )
    assert result.returncode == 0, result.stderr
    assert validate_shards(out / "mined", "mined") == []
    assert validate_shards(out / "train", "train") == []
    assert "percpos:0.95" in (out / "train" / "README.md").read_text()
    train = read_shards(out / "train").to_pylist()
    assert len(train) == 8
    assert all(len(row["negatives"]) == 2 for row in train)
    assert all(row["query"].startswith("Instruct: ") for row in train)
    report = json.loads((out / "mined" / "report.json").read_text())
    assert report["details"]["pools"]["corpus:mini"]["num_docs"] == 30


def test_mine_calibrate_prints_the_grid_and_writes_no_mined_set(tmp_path) -> None:
    beir = write_beir(tmp_path / "mini")
    out = tmp_path / "out"
    result = run_cli("mine", "--beir", str(beir), "--out", str(out), "--calibrate", *MINE_OPTIONS)
    assert result.returncode == 0, result.stderr
    assert "percpos:0.95" in result.stdout
    assert "marginpos:0.05" in result.stdout
    assert "positive" in result.stdout
    assert not (out / "mined").exists()


def test_mine_pairs_file_with_a_corpus_file(tmp_path) -> None:
    pairs = tmp_path / "qa.jsonl"
    corpus = tmp_path / "docs.jsonl"
    with open(pairs, "w") as handle:
        for i in range(6):
            record = {"query": f"{TOPICS[i % 4]} {i}?", "positive": f"{TOPICS[i % 4]} answer {i}"}
            handle.write(json.dumps(record) + "\n")
    with open(corpus, "w") as handle:
        for i in range(20):
            record = {"_id": f"extra{i}", "text": f"{TOPICS[i % 4]} extra document {i}"}
            handle.write(json.dumps(record) + "\n")
    out = tmp_path / "out"
    result = run_cli(
        "mine", "--pairs", str(pairs), "--corpus", str(corpus), "--out", str(out), *MINE_OPTIONS
    )
    assert result.returncode == 0, result.stderr
    mined = read_shards(out / "mined").to_pylist()
    assert len(mined) == 6
    assert any(neg_id.startswith("extra") for row in mined for neg_id in row["negative_ids"])
