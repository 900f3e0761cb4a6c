"""Tevatron: the grouped JSON Lines of its retriever training (the `positive_passages` layout).

`tevatron.retriever.dataset.TrainDataset` loads the files with `datasets.load_dataset` and, for
a group with `positive_passages`, reads `query`, then `title` and `text` of one positive and of
`--train_group_size - 1` negatives (sampled again from the row's own when it has fewer).
`query_id` and each passage's `docid` are the ids the mined set kept: the BEIR query and
document ids, or the ids a source assigned. Passage texts are the documents as mining saw them
(a BEIR title is already joined to the text), so `title` is empty.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from embedcurate.pipeline.export.types import ExportRow, TrainerFormat

PASSAGES = pa.list_(
    pa.struct(
        [
            pa.field("docid", pa.string()),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
        ]
    )
)


def schema(num_negatives: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("query_id", pa.string(), nullable=False),
            pa.field("query", pa.string(), nullable=False),
            pa.field("positive_passages", PASSAGES, nullable=False),
            pa.field("negative_passages", PASSAGES, nullable=False),
        ]
    )


def _passage(docid: str | None, text: str) -> dict[str, str]:
    return {"docid": docid or "", "title": "", "text": text}


def record(row: ExportRow, num_negatives: int) -> dict[str, Any]:
    negatives = row.negatives[:num_negatives]
    negative_ids = list(row.negative_ids or [])
    negative_ids += [None] * (len(negatives) - len(negative_ids))
    return {
        "query_id": row.query_id or row.example_id,
        "query": row.query,
        "positive_passages": [_passage(row.positive_id, row.positive)],
        "negative_passages": [
            _passage(docid, text) for docid, text in zip(negative_ids, negatives, strict=True)
        ],
    }


def usage(export_dir: str, instruction_stripped: bool) -> str:
    prompt = (
        "    --query_prefix 'Instruct: <task definition>\\nQuery: ' \\\n"
        if instruction_stripped
        else ""
    )
    return f"""```bash
python -m tevatron.retriever.driver.train \\
    --model_name_or_path bert-base-uncased \\
    --dataset_name json \\
    --dataset_path '{export_dir}/data/*.jsonl' \\
    --train_group_size 4 \\
{prompt}    --output_dir tevatron-finetuned
```"""


FORMAT = TrainerFormat(
    name="tevatron",
    file_format="jsonl",
    schema=schema,
    record=record,
    usage=usage,
    needs_ids=True,
)
