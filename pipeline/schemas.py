"""The data contract between stages: one pyarrow schema per table, declared once, here.

Three tables flow through the pipeline (see DESIGN.md, "Data contract"), plus the corpus a
source may bring for mining to draw candidates from:

- ``pairs``: what sources and the generator produce, one row per (query, positive);
- ``mined``: pairs plus the negatives a teacher mined for them, with per-negative lineage;
- ``train``: the templated rows the trainer reads, with a fixed number of negatives.

Every row carries ``schema_version``. A schema's fingerprint is a hash of its field names,
types and nullability; shard readers refuse a file whose fingerprint differs from the one
they expect, so a stage never silently reads a table of another shape.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1


class TaskType(StrEnum):
    RETRIEVAL = "retrieval"
    CLASSIFICATION = "classification"
    CLUSTERING = "clustering"
    STS = "sts"


class TableKind(StrEnum):
    CORPUS = "corpus"
    PAIRS = "pairs"
    MINED = "mined"
    TRAIN = "train"


_STRINGS = pa.list_(pa.string())
_FLOATS = pa.list_(pa.float32())
_INTS = pa.list_(pa.int32())

# Columns every table starts with: identity, routing and provenance.
_IDENTITY_FIELDS = [
    pa.field("schema_version", pa.int16(), nullable=False),
    pa.field("example_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("task_name", pa.string(), nullable=False),
    pa.field("stage", pa.int8(), nullable=False),
]

# Raw (untemplated) texts with their ids; `positive_ids` lists *every* labelled positive of the
# query so that mining can exclude them all, not just the one on this row.
_PAIR_FIELDS = [
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("query_id", pa.string()),
    pa.field("query", pa.string(), nullable=False),
    pa.field("positive_id", pa.string()),
    pa.field("positive", pa.string(), nullable=False),
    pa.field("positive_ids", _STRINGS, nullable=False),
    pa.field("given_negatives", _STRINGS),
    pa.field("label", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("symmetric", pa.bool_(), nullable=False),
    pa.field("generator", pa.string()),
    pa.field("prompt_id", pa.string()),
    pa.field("provenance", pa.string()),
]

# Mining lineage, hardest negative first; parallel lists of equal length.
_MINING_FIELDS = [
    pa.field("negatives", _STRINGS, nullable=False),
    pa.field("negative_ids", _STRINGS, nullable=False),
    pa.field("neg_scores", _FLOATS, nullable=False),
    pa.field("neg_ranks", _INTS, nullable=False),
    pa.field("pos_score", pa.float32()),
    pa.field("teacher", pa.string()),
    pa.field("mining_rule", pa.string()),
    pa.field("candidates_dropped", pa.int32(), nullable=False),
]

# Judge lineage (pipeline.judge), parallel to `negatives`; null where no judge ran. A relabelled
# negative leaves `negatives` for `positive_ids` (its id) and `extra_positives` (its text).
_JUDGE_FIELDS = [
    pa.field("neg_judges", _STRINGS),
    pa.field("neg_judge_scores", _FLOATS),
    pa.field("neg_verdicts", _STRINGS),
    pa.field("extra_positives", _STRINGS),
]

# Documents a source brings beside its pairs (a BEIR corpus): the pool mining draws from.
CORPUS_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
    ]
)

PAIRS_SCHEMA = pa.schema(_IDENTITY_FIELDS + _PAIR_FIELDS)

MINED_SCHEMA = pa.schema(_IDENTITY_FIELDS + _PAIR_FIELDS + _MINING_FIELDS + _JUDGE_FIELDS)

# Train rows hold templated texts. `*_instruction_chars` is the length of the instruction prefix
# (`Instruct: {task}\nQuery: `) at the start of the text, 0 when untemplated, so the model can
# leave the instruction out of pooling. Symmetric tasks template documents too.
# `extra_positives` are texts a judge found relevant (relabel mode): the trainer keeps them out
# of the row's negatives, in-batch ones included.
TRAIN_SCHEMA = pa.schema(
    [
        *_IDENTITY_FIELDS,
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("query_instruction_chars", pa.int32(), nullable=False),
        pa.field("positive", pa.string(), nullable=False),
        pa.field("negatives", _STRINGS, nullable=False),
        pa.field("doc_instruction_chars", pa.int32(), nullable=False),
        pa.field("pos_score", pa.float32()),
        pa.field("neg_scores", _FLOATS),
        pa.field("label", pa.string()),
        pa.field("teacher", pa.string()),
        pa.field("mining_rule", pa.string()),
        pa.field("extra_positives", _STRINGS),
    ]
)

SCHEMAS: dict[TableKind, pa.Schema] = {
    TableKind.CORPUS: CORPUS_SCHEMA,
    TableKind.PAIRS: PAIRS_SCHEMA,
    TableKind.MINED: MINED_SCHEMA,
    TableKind.TRAIN: TRAIN_SCHEMA,
}


def schema_for(kind: TableKind | str) -> pa.Schema:
    return SCHEMAS[TableKind(kind)]


def _type_signature(data_type: pa.DataType) -> str:
    """Type text that ignores list item names (Parquet calls them `element`, Arrow `item`)."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"list<{_type_signature(data_type.value_type)}>"
    return str(data_type)


def schema_fingerprint(schema: pa.Schema) -> str:
    """Short hash of field names, types and nullability (metadata is ignored)."""
    parts = [
        f"{f.name}:{_type_signature(f.type)}:{'null' if f.nullable else 'notnull'}" for f in schema
    ]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


def kind_of_fingerprint(fingerprint: str) -> TableKind | None:
    for kind, schema in SCHEMAS.items():
        if schema_fingerprint(schema) == fingerprint:
            return kind
    return None


def conform(table: pa.Table, kind: TableKind | str) -> pa.Table:
    """Return `table` with the columns, order and types of `kind`'s schema.

    Missing nullable columns are filled with nulls and `schema_version` is set, so stages can
    build tables from the columns they know about. A missing non-nullable column is an error.
    """
    schema = schema_for(kind)
    num_rows = table.num_rows
    columns: list[pa.Array | pa.ChunkedArray] = []
    for field in schema:
        if field.name == "schema_version":
            columns.append(pa.array([SCHEMA_VERSION] * num_rows, type=pa.int16()))
        elif field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(num_rows, type=field.type))
        else:
            raise ValueError(f"{kind} table is missing required column {field.name!r}")
    return pa.Table.from_arrays(columns, schema=schema)


def rows_to_table(rows: list[dict[str, Any]], kind: TableKind | str) -> pa.Table:
    """Build a conforming table from row dicts (missing nullable keys become null)."""
    schema = schema_for(kind)
    names = [f.name for f in schema if f.name != "schema_version"]
    data = {name: [row.get(name) for row in rows] for name in names}
    fields = [schema.field(name) for name in names]
    partial = pa.table(
        {
            name: pa.array(values, type=f.type)
            for (name, values), f in zip(data.items(), fields, strict=True)
        }
    )
    return conform(partial, kind)
