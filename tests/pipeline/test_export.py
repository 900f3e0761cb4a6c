"""Exports for other trainers, read back the way each trainer reads them."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from embedcurate.pipeline.blend import TemplateStageConfig, parse_blend
from embedcurate.pipeline.card.build import run_card
from embedcurate.pipeline.card.hub import license_fields
from embedcurate.pipeline.errors import EmbedCurateError, ShardSetError
from embedcurate.pipeline.export import ExportConfig, run_export
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import read_shards, validate_shards, write_shards
from embedcurate.pipeline.train_rows import run_template
from testkit.rows import make_pair_row

QA_INSTRUCTION = "Given a question, retrieve passages that answer it"
STS_INSTRUCTION = "Retrieve semantically similar text"
# Negatives per QA row: two rows are short (one negative, none).
QA_NEGATIVES = [3, 3, 3, 3, 3, 3, 3, 1, 0, 3]


def _mined_row(index: int, num_negatives: int, **overrides: Any) -> dict[str, Any]:
    row = make_pair_row(index, **{"source": "qa", "instruction": QA_INSTRUCTION, **overrides})
    row.update(
        negatives=[f"wrong passage {index}.{j}" for j in range(num_negatives)],
        negative_ids=[f"n{index}.{j}" for j in range(num_negatives)],
        neg_scores=[0.5 - 0.1 * j for j in range(num_negatives)],
        neg_ranks=list(range(1, num_negatives + 1)),
        pos_score=0.8,
        teacher="unit-teacher",
        mining_rule="percpos:0.95",
        candidates_dropped=0,
    )
    return row


def _sts_row(index: int) -> dict[str, Any]:
    return _mined_row(
        index,
        3,
        source="sts",
        task_type="sts",
        task_name="UnitSTS",
        stage=2,
        instruction=STS_INSTRUCTION,
        symmetric=True,
        query=f"a cat sits on mat {index}",
        positive=f"a cat is sitting on mat {index}",
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder: mined/ written from rows, train/ by the template stage, with its card."""
    data = {
            "name": "exporttest",
            "description": "Rows for the export tests.",
            "sources": [
                {"name": "qa", "kind": "hf", "hub_id": "org/qa", "license": "cc-by-4.0"},
                {"name": "sts", "kind": "hf", "hub_id": "org/sts", "task_type": "sts",
                 "stage": 2, "license": "cc-by-sa-4.0"},
            ],
            "mining": {"num_negatives": 3, "on_too_few": "keep"},
            "output": {"rows_per_shard": 6},
    }  # fmt: skip
    blend = parse_blend(data, base_dir=tmp_path)
    rows = [_mined_row(i, n) for i, n in enumerate(QA_NEGATIVES)]
    rows += [_sts_row(100 + i) for i in range(4)]
    run = tmp_path / "run"
    write_shards(rows_to_table(rows, TableKind.MINED), run / "mined", TableKind.MINED,
                 rows_per_shard=5)  # fmt: skip
    run_template(
        run / "mined", run / "train", TemplateStageConfig.of(blend), provenance=blend.portable()
    )
    run_card(run / "train", run, blend)
    return run


def _records(out: Path) -> list[dict[str, Any]]:
    manifest = read_manifest(out)
    records: list[dict[str, Any]] = []
    for entry in manifest.shards:
        path = out / entry.file
        if path.suffix == ".parquet":
            records += pq.read_table(path).to_pylist()
        else:
            records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def _train_rows(run: Path) -> list[dict[str, Any]]:
    return read_shards(run / "train").to_pylist()


def test_sentence_transformers_n_tuples_drop_short_rows(run_dir: Path, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "st"
    report = run_export(run_dir / "train", out, ExportConfig(format="sentence-transformers"))
    assert validate_shards(out) == []
    assert report.num_in == 14
    assert report.num_kept == 12
    assert dict(report.dropped) == {"fewer_negatives": 2}
    loaded = datasets.load_dataset(
        "parquet",
        data_files=str(out / "data" / "*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    # Only texts, in the order MultipleNegativesRankingLoss takes them: no label, no ids.
    assert loaded.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(loaded) == 12
    train = {row["query"]: row for row in _train_rows(run_dir)}
    for record in loaded:
        row = train[record["anchor"]]
        assert record["positive"] == row["positive"]
        assert [record[f"negative_{j}"] for j in (1, 2, 3)] == row["negatives"]
    assert all(anchor.startswith("Instruct: ") for anchor in loaded["anchor"])


def test_keep_pads_short_rows_and_drops_rows_without_negatives(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "st-keep"
    cfg = ExportConfig(format="sentence-transformers", on_short="keep", strip_instruction=True)
    report = run_export(run_dir / "train", out, cfg)
    assert dict(report.dropped) == {"no_negatives": 1}
    assert report.num_kept == 13
    short = next(r for r in _records(out) if r["anchor"] == "what is item number 7?")
    assert [short[f"negative_{j}"] for j in (1, 2, 3)] == ["wrong passage 7.0"] * 3


def test_strip_instruction_gives_back_the_raw_texts(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "st-raw"
    cfg = ExportConfig(format="sentence-transformers", strip_instruction=True, stage="2")
    report = run_export(run_dir / "train", out, cfg)
    assert dict(report.dropped) == {"other_stage": 10}
    records = sorted(_records(out), key=lambda r: r["anchor"])
    assert [r["anchor"] for r in records] == [f"a cat sits on mat {100 + i}" for i in range(4)]
    # STS is symmetric: its documents were templated too, and come back without it.
    assert records[0]["positive"] == "a cat is sitting on mat 100"
    assert records[0]["negative_1"] == "wrong passage 100.0"


def test_flagembedding_lines_as_its_dataset_reads_them(run_dir: Path, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "flag"
    cfg = ExportConfig(format="flagembedding", strip_instruction=True, num_negatives=2)
    run_export(run_dir / "train", out, cfg)
    assert validate_shards(out) == []
    # AbsEmbedderTrainDataset loads every .json/.jsonl file of the --train_data folder.
    data_dir = out / "data"
    files = [f for f in os.listdir(data_dir) if f.endswith((".json", ".jsonl"))]
    assert files == ["train-00000-of-00001.jsonl"]
    loaded = datasets.load_dataset(
        "json", data_files=str(data_dir / files[0]), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert set(loaded.column_names) == {"query", "pos", "neg", "prompt"}
    templated = {row["query"] for row in _train_rows(run_dir)}
    for line in loaded:
        assert isinstance(line["pos"], list)
        assert len(line["neg"]) == 2
        # --query_instruction_format 'Instruct: {}\nQuery: {}' rebuilds the NV-Embed query.
        assert "Instruct: {}\nQuery: {}".format(line["prompt"], line["query"]) in templated


def test_flagembedding_keeps_the_instruction_in_the_query_by_default(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "flag-templated"
    run_export(run_dir / "train", out, ExportConfig(format="flagembedding", stage="1"))
    records = _records(out)
    assert records
    assert all(r["prompt"] == "" for r in records)
    assert all(r["query"].startswith(f"Instruct: {QA_INSTRUCTION}\nQuery: ") for r in records)


def test_tevatron_groups_carry_the_mined_ids(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tev"
    cfg = ExportConfig(format="tevatron", strip_instruction=True, stage="1")
    run_export(run_dir / "train", out, cfg)
    mined = {row["query_id"]: row for row in read_shards(run_dir / "mined").to_pylist()}
    records = _records(out)
    assert len(records) == 8
    for record in records:
        row = mined[record["query_id"]]
        assert record["query"] == row["query"]
        assert record["positive_passages"] == [
            {"docid": row["positive_id"], "title": "", "text": row["positive"]}
        ]
        assert [p["docid"] for p in record["negative_passages"]] == row["negative_ids"][:3]
        assert [p["text"] for p in record["negative_passages"]] == row["negatives"][:3]


def test_tevatron_without_the_mined_set_says_how_to_give_it(run_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    (run_dir / "train").rename(bare)
    with pytest.raises(EmbedCurateError, match="--mined DIR"):
        run_export(bare, tmp_path / "tev", ExportConfig(format="tevatron"))
    assert not (tmp_path / "tev").exists()


def test_croissant_beside_train_and_export_loads_with_mlcroissant(
    run_dir: Path, tmp_path: Path
) -> None:
    import mlcroissant as mlc

    out = tmp_path / "st"
    run_export(run_dir / "train", out, ExportConfig(format="sentence-transformers"))
    for shard_dir, num_rows in ((run_dir / "train", 14), (out, 12)):
        dataset = mlc.Dataset(jsonld=shard_dir / "croissant.json")
        assert not dataset.metadata.issues.errors
        records = list(dataset.records("train"))
        assert len(records) == num_rows
        payload = json.loads((shard_dir / "croissant.json").read_text())
        manifest = read_manifest(shard_dir)
        files = {d["contentUrl"]: d["sha256"] for d in payload["distribution"] if "sha256" in d}
        assert files == {entry.file: entry.sha256 for entry in manifest.shards}
        assert sorted(payload["license"]) == ["cc-by-4.0", "cc-by-sa-4.0"]
        assert "qa: hf source org/qa" in payload["rai:dataCollection"]
        assert payload["rai:dataLimitations"]
    export_payload = json.loads((out / "croissant.json").read_text())
    assert (
        "export (qa, sts): 14 rows in, 12 kept, dropped fewer_negatives: 2"
        in export_payload["rai:dataPreprocessingProtocol"]
    )
    names = [field["name"] for field in export_payload["recordSet"][0]["field"]]
    assert names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]


def test_export_card_names_the_source_by_content_hash(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flag"
    run_export(run_dir / "train", out, ExportConfig(format="flagembedding"))
    text = (out / "README.md").read_text()
    assert read_manifest(run_dir / "train").content_hash in text
    assert "--train_data flag/data" in text
    assert "| qa | 10 | 8 | fewer_negatives: 2 |" in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_negatives": 4}, "--num-negatives 4 is more than any row has (at most 3)"),
        ({"stage": "2", "num_negatives": 5}, "than any stage-2 row has (at most 3)"),
    ],
)
def test_more_negatives_than_any_row_has_is_refused(
    run_dir: Path, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(EmbedCurateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_export(run_dir / "train", out, ExportConfig(format="flagembedding", **options))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_existing_output_folder_is_refused_and_left_alone(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(EmbedCurateError, match="already exists"):
        run_export(run_dir / "train", out, ExportConfig(format="sentence-transformers"))
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_shard_set_that_fails_validation_is_refused(run_dir: Path, tmp_path: Path) -> None:
    shard = sorted((run_dir / "train").glob("train-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ShardSetError, match="truncated"):
        run_export(run_dir / "train", tmp_path / "out", ExportConfig(format="tevatron"))
    assert not (tmp_path / "out").exists()


def test_unknown_format_and_bad_options_fail_validation() -> None:
    with pytest.raises(ValidationError, match="format"):
        ExportConfig(format="colbert")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="on_short"):
        ExportConfig(format="tevatron", on_short="pad")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="num_negatives"):
        ExportConfig(format="tevatron", num_negatives=-1)


def test_hub_card_loads_without_warnings(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import datasets
    from huggingface_hub import DatasetCard

    train_dir = run_dir / "train"
    card = DatasetCard.load(train_dir / "README.md")
    assert card.data.license == "other"
    assert card.data.license_name == "per-source"
    assert card.data.license_link == "README.md#sources"
    split = card.data.dataset_info["splits"][0]
    assert split["num_bytes"] > 0
    assert split["num_examples"] == 14
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = datasets.load_dataset(
            str(train_dir), split="train", cache_dir=str(tmp_path / "hf")
        )
    assert len(loaded) == 14
    assert [r for r in caplog.records if r.name.startswith("datasets")] == []


def test_one_hub_licence_stays_an_id_and_anything_else_is_other() -> None:
    assert license_fields(["apache-2.0", "apache-2.0"]) == {"license": "apache-2.0"}
    assert license_fields(["machine-generated"])["license"] == "other"
    assert license_fields(["mit", "cc-by-4.0"])["license_name"] == "per-source"


def test_a_killed_export_leaves_no_output_and_is_cleaned_up(run_dir: Path, tmp_path: Path) -> None:
    leftover = tmp_path / ".st.4242.export.tmp"
    (leftover / "data").mkdir(parents=True)
    (leftover / "data" / ".part-00000.parquet").write_bytes(b"half")
    run_export(run_dir / "train", tmp_path / "st", ExportConfig(format="sentence-transformers"))
    assert not leftover.exists()
    assert validate_shards(tmp_path / "st") == []


def test_stage_may_be_given_as_a_number() -> None:
    assert ExportConfig(format="tevatron", stage=2).stage == "2"
    with pytest.raises(ValidationError, match="stage"):
        ExportConfig(format="tevatron", stage=3)


def test_croissant_is_rewritten_byte_for_byte(run_dir: Path) -> None:
    path = run_dir / "train" / "croissant.json"
    first = path.read_bytes()
    run_card(run_dir / "train", run_dir)
    assert path.read_bytes() == first


@pytest.mark.parametrize("format_name", ["sentence-transformers", "flagembedding", "tevatron"])
def test_an_export_folder_loads_as_a_hub_dataset_without_warnings(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, format_name: str
) -> None:
    import datasets

    out = tmp_path / "export"
    run_export(run_dir / "train", out, ExportConfig(format=format_name))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == read_manifest(out).num_rows == 12
    assert [r for r in caplog.records if r.name.startswith("datasets")] == []


def test_validation_checks_jsonl_shards_and_their_data_folder(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "flag"
    run_export(run_dir / "train", out, ExportConfig(format="flagembedding"))
    assert validate_shards(out, "export/flagembedding") == []
    as_train = validate_shards(out, "train")
    assert "manifest.json: holds a export/flagembedding table, expected train" in as_train
    (out / "data" / "notes.jsonl").write_text("{}\n")
    shard = out / "data" / "train-00000-of-00001.jsonl"
    shard.write_text(shard.read_text().replace("wrong passage", "right passage"))
    problems = validate_shards(out)
    assert "data/notes.jsonl: extra file not listed in manifest.json" in problems
    assert any(p.startswith("data/train-00000-of-00001.jsonl: sha256 mismatch") for p in problems)
