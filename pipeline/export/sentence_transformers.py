"""sentence-transformers: the n-tuple layout of `util.mine_hard_negatives`.

Columns `anchor`, `positive`, `negative_1` ... `negative_k`, all text, in that order: the
trainer's collator tokenizes every column except `label`/`score`/`labels`/`scores` (which it
takes as the loss target) and hands them to the loss by position, so nothing else may be there
(a null `label` column is what fails with "Could not infer dtype of NoneType").
`MultipleNegativesRankingLoss` reads (anchor, positive, negative_1, ..., negative_k).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from embedcurate.pipeline.export.types import ExportRow, TrainerFormat


def negative_columns(num_negatives: int) -> list[str]:
    return [f"negative_{i}" for i in range(1, num_negatives + 1)]


def schema(num_negatives: int) -> pa.Schema:
    names = ["anchor", "positive", *negative_columns(num_negatives)]
    return pa.schema([pa.field(name, pa.string(), nullable=False) for name in names])


def record(row: ExportRow, num_negatives: int) -> dict[str, Any]:
    negatives = dict(zip(negative_columns(num_negatives), row.negatives, strict=False))
    return {"anchor": row.query, "positive": row.positive, **negatives}


def usage(export_dir: str, instruction_stripped: bool) -> str:
    prompt = (
        "\n# the instruction was stripped: give it back as a prompt, e.g.\n"
        '# args = SentenceTransformerTrainingArguments(..., prompts={"anchor": "Instruct: ...\\n'
        'Query: "})'
        if instruction_stripped
        else ""
    )
    return f"""```python
from datasets import load_dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.losses import MultipleNegativesRankingLoss

train = load_dataset("parquet", data_files="{export_dir}/data/*.parquet", split="train")
model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
trainer = SentenceTransformerTrainer(
    model=model, train_dataset=train, loss=MultipleNegativesRankingLoss(model)
){prompt}
trainer.train()
```"""


FORMAT = TrainerFormat(
    name="sentence-transformers",
    file_format="parquet",
    schema=schema,
    record=record,
    usage=usage,
    fixed_width=True,
)
