from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from embedcurate.pipeline.errors import InputError
from embedcurate.pipeline.sources.beir import load_beir


def write_beir(root: Path, docs: dict, queries: dict, qrels: list[tuple[str, str, int]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in docs.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    docs = {f"d{i}": (f"T{i}", f"document {i}") for i in range(5)}
    queries = {"q1": "first", "q2": "second", "q3": "unjudged"}
    return write_beir(
        tmp_path / "b",
        docs,
        queries,
        [("q1", "d0", 1), ("q1", "d3", 2), ("q2", "d1", 1), ("q2", "d2", 0)],
    )


def test_loads_corpus_judged_queries_and_positive_qrels(beir_dir) -> None:
    folder = load_beir(beir_dir, "train")
    assert folder.num_docs == 5
    assert folder.corpus.column("title").to_pylist()[0] == "T0"
    assert folder.queries == {"q1": "first", "q2": "second"}
    assert folder.qrels == {"q1": {"d0": 1, "d3": 2}, "q2": {"d1": 1}}


def test_qrels_naming_a_missing_document_is_an_error_with_file_and_line(beir_dir) -> None:
    with open(beir_dir / "qrels" / "train.tsv", "a") as f:
        f.write("q1\tnope\t1\n")
    with pytest.raises(InputError) as info:
        load_beir(beir_dir, "train")
    assert str(beir_dir / "qrels" / "train.tsv") in str(info.value)
    assert "line 6" in str(info.value)
    assert "unknown_document" in str(info.value)


def test_drop_mode_counts_each_bad_line(beir_dir) -> None:
    with open(beir_dir / "corpus.jsonl", "ab") as f:
        f.write(
            b'{"_id": "d9", "text": "\xff\xfe broken"}\n{not json}\n{"_id": "d0", "text": "dup"}\n'
        )
    dropped: Counter[str] = Counter()
    folder = load_beir(
        beir_dir, "train", on_error="drop", drop=lambda reason: dropped.update([reason])
    )
    assert folder.num_docs == 5
    assert dropped == {"invalid_utf8": 1, "invalid_json": 1, "duplicate_id": 1}
