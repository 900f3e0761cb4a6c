from __future__ import annotations

import pyarrow as pa
import pytest

from embedcurate.pipeline.schemas import (
    CORPUS_SCHEMA,
    MINED_SCHEMA,
    PAIRS_SCHEMA,
    SCHEMA_VERSION,
    TRAIN_SCHEMA,
    TableKind,
    conform,
    kind_of_fingerprint,
    rows_to_table,
    schema_fingerprint,
)


def test_every_table_carries_schema_version_and_identity_columns() -> None:
    assert CORPUS_SCHEMA.names[0] == "schema_version"
    for schema in (PAIRS_SCHEMA, MINED_SCHEMA, TRAIN_SCHEMA):
        names = schema.names
        assert names[:6] == [
            "schema_version",
            "example_id",
            "source",
            "task_type",
            "task_name",
            "stage",
        ]


def test_mined_extends_pairs_with_mining_lineage() -> None:
    assert MINED_SCHEMA.names[: len(PAIRS_SCHEMA)] == PAIRS_SCHEMA.names
    added = set(MINED_SCHEMA.names) - set(PAIRS_SCHEMA.names)
    assert added == {
        "negatives",
        "negative_ids",
        "neg_scores",
        "neg_ranks",
        "pos_score",
        "teacher",
        "mining_rule",
        "candidates_dropped",
        "neg_judges",
        "neg_judge_scores",
        "neg_verdicts",
        "extra_positives",
    }


def test_fingerprints_differ_per_table_and_ignore_metadata() -> None:
    schemas = (CORPUS_SCHEMA, PAIRS_SCHEMA, MINED_SCHEMA, TRAIN_SCHEMA)
    prints = {schema_fingerprint(s) for s in schemas}
    assert len(prints) == 4
    with_meta = PAIRS_SCHEMA.with_metadata({b"x": b"y"})
    assert schema_fingerprint(with_meta) == schema_fingerprint(PAIRS_SCHEMA)
    assert kind_of_fingerprint(schema_fingerprint(TRAIN_SCHEMA)) is TableKind.TRAIN


def test_fingerprint_changes_with_a_type_or_nullability() -> None:
    changed_type = PAIRS_SCHEMA.set(2, pa.field("source", pa.large_string(), nullable=False))
    changed_null = PAIRS_SCHEMA.set(2, pa.field("source", pa.string(), nullable=True))
    base = schema_fingerprint(PAIRS_SCHEMA)
    assert schema_fingerprint(changed_type) != base
    assert schema_fingerprint(changed_null) != base


def test_rows_to_table_fills_version_and_nullable_columns(pair_rows) -> None:
    table = rows_to_table(pair_rows(3), TableKind.PAIRS)
    assert table.schema == PAIRS_SCHEMA
    assert table.column("schema_version").to_pylist() == [SCHEMA_VERSION] * 3
    assert table.column("generator").null_count == 3


def test_conform_refuses_a_missing_required_column(pair_rows) -> None:
    table = rows_to_table(pair_rows(2), TableKind.PAIRS).drop_columns(["query"])
    with pytest.raises(ValueError, match="query"):
        conform(table, TableKind.PAIRS)
