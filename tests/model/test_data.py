from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from embedcurate.model.config import StageConfig
from embedcurate.model.data import TrainShards, build_contrastive_batch, stage_batches, tokenize
from embedcurate.pipeline.errors import ShardSetError
from embedcurate.pipeline.packaged import resolve_model_path
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import shard_name, write_shards
from testkit.tiny import MINILM, retrieval_train_rows


def write_train(tmp_path: Path, rows: list[dict[str, Any]], rows_per_shard: int = 5) -> Path:
    out = tmp_path / "train"
    write_shards(
        rows_to_table(rows, TableKind.TRAIN), out, TableKind.TRAIN, rows_per_shard=rows_per_shard
    )
    return out


def classification_rows(num_labels: int, per_label: int) -> list[dict[str, Any]]:
    rows = []
    for label, copy in itertools.product(range(num_labels), range(per_label)):
        rows.append(
            {
                **retrieval_train_rows(1)[0],
                "example_id": f"c{label}-{copy}",
                "task_type": "classification",
                "task_name": "UnitLabels",
                "stage": 2,
                "query": f"text {copy} of class {label}",
                "query_instruction_chars": 0,
                "positive": f"another text of class {label}",
                "negatives": [f"a text of class {(label + 1) % num_labels}"],
                "label": f"class-{label}",
            }
        )
    return rows


def test_a_shard_set_that_does_not_validate_is_refused(tmp_path: Path) -> None:
    shards = write_train(tmp_path, retrieval_train_rows())
    (shards / shard_name(1, 3)).write_bytes(b"not parquet")
    with pytest.raises(ShardSetError, match=r"train-00001-of-00003\.parquet"):
        TrainShards(shards)
    pairs = tmp_path / "pairs"
    write_shards(rows_to_table([], TableKind.PAIRS), pairs, TableKind.PAIRS)
    with pytest.raises(ShardSetError, match="expected train"):
        TrainShards(pairs)


def test_stage_batches_are_seeded_and_cover_the_rows_of_their_stage(tmp_path: Path) -> None:
    rows = retrieval_train_rows() + classification_rows(3, 2)
    shards = TrainShards(write_train(tmp_path, rows))
    stage1 = StageConfig(stage=1, batch_size=4)
    first = list(itertools.islice(stage_batches(shards, stage1, seed=1, buffer=8), 3))
    again = list(itertools.islice(stage_batches(shards, stage1, seed=1, buffer=8), 3))
    other = list(itertools.islice(stage_batches(shards, stage1, seed=2, buffer=8), 3))
    ids = [r.example_id for batch in first for r in batch]
    assert ids == [r.example_id for batch in again for r in batch]
    assert ids != [r.example_id for batch in other for r in batch]
    assert sorted(ids) == sorted(f"r{i}" for i in range(12))  # one epoch, stage-1 rows only
    stage2_own = dataclasses.replace(stage1, stage=2, rows="own")
    batch = next(stage_batches(shards, stage2_own, seed=1, buffer=8))
    assert {r.task_type for r in batch} == {"classification"}


def test_stage_two_batches_hold_one_task_type_and_spread_labels(tmp_path: Path) -> None:
    rows = retrieval_train_rows(stage=2) + classification_rows(num_labels=6, per_label=4)
    shards = TrainShards(write_train(tmp_path, rows, rows_per_shard=7))
    cfg = StageConfig(stage=2, batch_size=4, in_batch_negatives=False, one_task_type_per_batch=True)
    batches = list(itertools.islice(stage_batches(shards, cfg, seed=0, buffer=50), 20))
    for batch in batches:
        assert len(batch) == 4
        assert len({r.task_type for r in batch}) == 1
        labels = [r.label for r in batch if r.label is not None]
        assert len(labels) == len(set(labels)), labels
    assert {r.task_type for b in batches for r in b} == {"retrieval", "classification"}


def test_a_task_with_fewer_labels_than_the_batch_size_still_fills_batches(tmp_path: Path) -> None:
    shards = TrainShards(write_train(tmp_path, classification_rows(num_labels=2, per_label=12)))
    cfg = StageConfig(stage=2, batch_size=4, one_task_type_per_batch=True)
    batches = list(itertools.islice(stage_batches(shards, cfg, seed=0, buffer=8), 6))
    assert all(len(batch) == 4 for batch in batches)


def test_a_stage_without_rows_is_an_error_naming_the_set(tmp_path: Path) -> None:
    shards = TrainShards(write_train(tmp_path, retrieval_train_rows()))
    with pytest.raises(ValueError, match="no rows for stage 2"):
        next(stage_batches(shards, StageConfig(stage=2, rows="own"), seed=0, buffer=8))


def test_contrastive_batch_flattens_documents_row_by_row(tmp_path: Path) -> None:
    shards = TrainShards(write_train(tmp_path, retrieval_train_rows(num_negatives=3)))
    rows = next(stage_batches(shards, StageConfig(stage=1, batch_size=3), seed=0, buffer=4))
    batch = build_contrastive_batch(rows, num_hard_negatives=2)
    assert len(batch.docs) == 9  # 3 rows x (positive + 2 hardest negatives)
    assert batch.doc_owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch.positive_index.tolist() == [0, 3, 6]
    assert [batch.docs[i] for i in (0, 3, 6)] == [r.positive for r in rows]
    assert batch.docs[1:3] == list(rows[0].negatives[:2])
    assert batch.row_label_key.tolist() == [-1, -1, -1]


def test_extra_positives_mark_every_copy_of_their_text_in_the_batch(tmp_path: Path) -> None:
    rows = retrieval_train_rows(num_negatives=2)[:3]
    rows[0]["extra_positives"] = [rows[1]["positive"]]  # judged relevant to row 0's query
    shards = TrainShards(write_train(tmp_path, rows))
    batch_rows = sorted(
        next(stage_batches(shards, StageConfig(stage=1, batch_size=3), seed=0, buffer=1)),
        key=lambda r: r.example_id,
    )
    assert batch_rows[0].extra_positives == (rows[1]["positive"],)
    batch = build_contrastive_batch(batch_rows, num_hard_negatives=2)
    assert batch.extra_positive is not None
    marked = [[batch.docs[j] for j in range(len(batch.docs)) if m[j]] for m in batch.extra_positive]
    assert set(marked[0]) == {rows[1]["positive"]}
    assert marked[0].count(rows[1]["positive"]) == batch.docs.count(rows[1]["positive"])
    assert marked[1] == marked[2] == []
    plain = build_contrastive_batch(
        [dataclasses.replace(r, extra_positives=()) for r in batch_rows], 2
    )
    assert plain.extra_positive is None


def metaspace_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer that marks word starts with '▁' the SentencePiece way (the space
    is part of the next token, so a query's first token straddles the instruction's end)."""
    pre_tokenizer = pre_tokenizers.Metaspace()
    pieces = {piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(text)}
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2} | {
        piece: index + 3 for index, piece in enumerate(sorted(pieces))
    }
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>"
    )


@pytest.mark.parametrize("kind", ["wordpiece", "metaspace"])
def test_instruction_tokens_are_left_out_of_the_pool(kind: str) -> None:
    prefix = "Instruct: Given a claim, find evidence\nQuery: "
    texts = [prefix + "do bees sleep at night", "bees sleep at night"]
    if kind == "wordpiece":
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    else:
        tokenizer = metaspace_tokenizer(texts)
    batch = tokenize(tokenizer, texts, [len(prefix), 0], max_length=64)
    special = set(tokenizer.all_special_ids)
    pooled = [
        [
            t
            for t, keep in zip(ids.tolist(), mask.tolist(), strict=True)
            if keep and t not in special
        ]
        for ids, mask in zip(batch.input_ids, batch.pool_mask, strict=True)
    ]
    words = [tokenizer.decode(row).replace("▁", " ").split() for row in pooled]
    assert words == [["do", "bees", "sleep", "at", "night"], ["bees", "sleep", "at", "night"]]
    # attention still covers the instruction; padding is in neither mask
    assert batch.attention_mask[0].sum() > batch.pool_mask[0].sum()
    assert (batch.pool_mask <= batch.attention_mask).all()


def test_truncation_keeps_the_pool_non_empty() -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    prefix = "Instruct: " + "a very long instruction " * 20 + "\nQuery: "
    batch = tokenize(tokenizer, [prefix + "short query"], [len(prefix)], max_length=16)
    assert batch.input_ids.shape == (1, 16)
    # the query was cut off: the row pools every real token rather than none
    assert batch.pool_mask.sum() == batch.attention_mask.sum() == 16
