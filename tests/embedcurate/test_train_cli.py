"""`embedcurate train | encode | eval` end to end on the packaged MiniLM.

The commands run in-process through Typer's runner (importing torch once, not per command);
the refusal test runs the real entry point in a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from embedcurate.cli import app
from embedcurate.model.embedder import DEFAULT_RETRIEVAL_INSTRUCTION, Embedder, instructed_query
from embedcurate.model.evaluate import instruction_for
from embedcurate.model.io import load_embedder
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import shard_name, write_shards
from testkit.cli import run_cli as run_embedcurate
from testkit.tiny import MINILM, retrieval_train_rows
from tests.model.test_data import classification_rows
from tests.model.test_evaluate import write_beir

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny batches: one thread beats two, and far more so on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_embedcurate(*args, timeout=600, OMP_NUM_THREADS="1")


def ndcg_by_hand(embedder: Embedder, beir: Path) -> float:
    """nDCG@10 of a BEIR folder with one relevant document per query, computed here from the
    embeddings alone: a query scores 1 / log2(1 + rank of its document), 0 past rank 10."""
    docs = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (beir / "queries.jsonl").read_text().splitlines()]
    qrels = dict(
        line.split("\t")[:2] for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    )
    doc_emb = embedder.encode_documents([f"{d['title']} {d['text']}" for d in docs])
    instruction = instruction_for(beir)  # the folder is not in the table: the generic one
    assert instruction == DEFAULT_RETRIEVAL_INSTRUCTION
    query_emb = embedder.encode_queries([q["text"] for q in queries], instruction)
    doc_ids = [d["_id"] for d in docs]
    gains = []
    for query, scores in zip(queries, query_emb @ doc_emb.T, strict=True):
        rank = 1 + int(np.sum(scores > scores[doc_ids.index(qrels[query["_id"]])]))
        gains.append(1 / np.log2(1 + rank) if rank <= 10 else 0.0)
    return float(np.mean(gains))


@pytest.mark.slow
def test_train_encode_and_eval_from_the_command_line(tmp_path: Path, one_thread: None) -> None:
    shards = tmp_path / "train"
    rows = retrieval_train_rows() + classification_rows(num_labels=3, per_label=4)
    write_shards(rows_to_table(rows, TableKind.TRAIN), shards, TableKind.TRAIN, rows_per_shard=8)
    run = tmp_path / "run"
    trained = invoke(
        "train", str(shards), "--backbone", MINILM, "--out", str(run), "--stage", "both",
        "--max-steps", "2", "--batch-size", "4", "--num-hard-negatives", "2",
        "--learning-rate", "1e-4", "--warmup-steps", "0", "--max-length", "64",
        "--temperature", "0.05", "--checkpoint-every", "1",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "0->2" in trained.output
    for stage in ("stage1", "stage2"):
        assert (run / stage / "adapter" / "adapter_model.safetensors").is_file()
    recorded = json.loads((run / "train_config.json").read_text())
    assert recorded["config"]["stage1"]["max_steps"] == 2
    assert recorded["config"]["loss"]["temperature"] == 0.05

    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"id": "a", "text": "do bees sleep?"})
        + "\n"
        + json.dumps({"id": "b", "text": "why is iron red?", "instruction": "Find causes"})
        + "\n"
    )
    out = tmp_path / "emb.npy"
    encoded = invoke("encode", str(run), "--input", str(queries), "--out", str(out), "--queries")
    assert encoded.exit_code == 0, encoded.output
    matrix = np.load(out, allow_pickle=False)
    assert matrix.shape == (2, 384)
    embedder = load_embedder(run, device=torch.device("cpu"))

    text_a, chars_a = instructed_query(DEFAULT_RETRIEVAL_INSTRUCTION, "do bees sleep?")
    text_b, chars_b = instructed_query("Find causes", "why is iron red?")
    expected = embedder.encode([text_a, text_b], [chars_a, chars_b], max_length=64)
    np.testing.assert_allclose(matrix, expected, atol=1e-5)

    beir = write_beir(tmp_path / "beir")
    scored = invoke("eval", str(run), "--beir", str(beir), "--split", "test", "--json")
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.stdout)
    assert result["num_queries"] == 12
    assert result["ndcg_at_10"] == pytest.approx(ndcg_by_hand(embedder, beir), abs=1e-4)
    baseline = invoke(
        "eval", "--backbone", MINILM, "--beir", str(beir), "--json", "--no-instruction"
    )
    assert baseline.exit_code == 0, baseline.output
    assert json.loads(baseline.stdout)["ndcg_at_10"] > 0.9
    table = invoke("eval", str(run), "--beir", str(beir))
    assert "nDCG@10" in table.output


@pytest.mark.slow
def test_train_refuses_a_broken_shard_set(tmp_path: Path) -> None:
    shards = tmp_path / "train"
    write_shards(
        rows_to_table(retrieval_train_rows(), TableKind.TRAIN),
        shards,
        TableKind.TRAIN,
        rows_per_shard=5,
    )
    (shards / shard_name(2, 3)).unlink()
    result = run_cli("train", str(shards), "--backbone", MINILM, "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "train-00002-of-00003.parquet: missing" in result.stderr
    assert not (tmp_path / "run").exists()
