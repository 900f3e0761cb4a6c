from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from embedcurate.model.config import (
    BackboneConfig,
    EmbedderConfig,
    LatentAttentionConfig,
    LoraSettings,
)
from embedcurate.model.embedder import DEFAULT_RETRIEVAL_INSTRUCTION, build_embedder
from embedcurate.model.evaluate import (
    evaluate_beir,
    exact_top_k,
    instruction_for,
    ndcg_at_k,
    recall_at_k,
)
from testkit.tiny import MINILM, TOPICS


def write_beir(folder: Path, *, self_match: bool = False) -> Path:
    """A BEIR folder of the topic passages with one question per topic."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for index, (topic, passage) in enumerate(TOPICS):
            corpus.write(json.dumps({"_id": f"d{index}", "title": topic, "text": passage}) + "\n")
        if self_match:  # a document sharing the first query's id and text
            corpus.write(json.dumps({"_id": "q0", "text": f"what about {TOPICS[0][0]}?"}) + "\n")
    with (folder / "queries.jsonl").open("w") as queries:
        for index, (topic, _) in enumerate(TOPICS):
            queries.write(json.dumps({"_id": f"q{index}", "text": f"what about {topic}?"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(len(TOPICS))]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_ndcg_and_recall_by_hand() -> None:
    relevant = {"a": 1, "b": 2}
    # DCG = 1/log2(3) (a at rank 2) + 2/log2(4) (b at rank 3); ideal = 2/log2(2) + 1/log2(3)
    expected = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], relevant, 10) == pytest.approx(expected)
    assert ndcg_at_k(["b", "a"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "a", "b"], relevant, 1) == 0.0
    assert recall_at_k(["x", "a"], relevant, 100) == 0.5
    assert recall_at_k(["x", "a", "b"], relevant, 2) == 0.5


def test_exact_top_k_orders_by_inner_product() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    docs = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert exact_top_k(queries, docs, 2, chunk=1).tolist() == [[1, 0], [2, 0]]


def test_untrained_minilm_finds_the_topic_passages(tmp_path: Path) -> None:
    cfg = EmbedderConfig(
        backbone=BackboneConfig(MINILM),
        latent=LatentAttentionConfig(enabled=False),
        lora=LoraSettings(enabled=False),
    )
    embedder = build_embedder(cfg, device=torch.device("cpu"), trainable=False)
    beir = write_beir(tmp_path / "beir", self_match=True)
    scores = evaluate_beir(embedder, beir, split="test", instruction=None)
    assert scores.num_queries == len(TOPICS)
    assert scores.num_docs == len(TOPICS) + 1
    # the self-matching document q0 would rank first for q0 if it were not excluded
    assert scores.ndcg_at_10 == pytest.approx(1.0)
    assert scores.recall_at_100 == 1.0


def test_the_query_instruction_comes_from_the_table_by_folder_name(tmp_path: Path) -> None:
    assert "scientific claim" in instruction_for(tmp_path / "scifact")
    assert instruction_for(tmp_path / "my-own-set") == DEFAULT_RETRIEVAL_INSTRUCTION
