"""A small blend with its own generated data for flow tests (no network, no ../shared)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

TOPICS = {
    "astronomy": "planet orbit telescope comet galaxy star moon eclipse nebula crater",
    "cooking": "flour oven dough sauce simmer roast knead spice yeast butter",
    "sports": "match goal team runner marathon referee coach league score sprint",
    "computing": "compiler server cache query index thread kernel function bug deploy",
}


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def write_corpus_folder(root: Path, num_docs: int, seed: int = 0) -> Path:
    """A BEIR folder: documents on four topics, one query per three documents."""
    rng = random.Random(seed)
    topics = list(TOPICS)
    (root / "qrels").mkdir(parents=True)
    docs, queries, qrels = [], [], []
    for i in range(num_docs):
        topic = topics[i % len(topics)]
        words = TOPICS[topic].split()
        docs.append(
            {"_id": f"d{i}", "title": f"{topic} note {i}", "text": _sentence(rng, words, 14)}
        )
        if i % 3 == 0:
            queries.append({"_id": f"q{i}", "text": f"{topic} " + _sentence(rng, words, 5)})
            qrels.append((f"q{i}", f"d{i}"))
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    with open(root / "queries.jsonl", "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in qrels]
    (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


def write_labelled_csv(path: Path, per_label: int = 6, seed: int = 1) -> Path:
    rng = random.Random(seed)
    lines = ["text,label"]
    for topic, words in TOPICS.items():
        lines += [f"{_sentence(rng, words.split(), 8)},{topic}" for _ in range(per_label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_flow_blend(
    root: Path, num_docs: int = 40, mining: str = "", extra: str = "", rows_per_shard: int = 16
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_corpus_folder(root / "beir", num_docs)
    write_labelled_csv(root / "topics.csv")
    body = f"""
name: flowtest
seed: 3
sources:
  - {{name: beir, kind: beir, path: beir, split: train, task: MSMARCO, stage: 1}}
  - name: topics
    kind: csv
    path: topics.csv
    task: DemoTopicsClassification
    task_type: classification
    stage: 2
    columns: {{query: text, label: label}}
mining:
  num_negatives: 2
  range_max: 10
  on_too_few: keep
{mining}
output:
  rows_per_shard: {rows_per_shard}
{extra}
"""
    blend = root / "blend.yaml"
    blend.write_text(body)
    return blend


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
