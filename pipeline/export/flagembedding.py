"""FlagEmbedding: the JSON Lines its embedder fine-tuning reads.

`AbsEmbedderTrainDataset` loads every `.json`/`.jsonl` file of each `--train_data` folder with
`datasets.load_dataset("json")` and reads `query` (text), `pos` and `neg` (lists of texts) and,
when `--query_instruction_for_retrieval` is set, `prompt`, formatted into the query with
`--query_instruction_format` (`"{}{}"` by default). So the data files sit in `data/`, apart from
manifest.json and croissant.json, and with `--strip-instruction` the task definition is the
prompt: `--query_instruction_format 'Instruct: {}\\nQuery: {}'` gives back the NV-Embed
template. Without it the instruction stays in `query` and `prompt` is empty.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from embedcurate.pipeline.export.types import ExportRow, TrainerFormat

_TEXTS = pa.list_(pa.string())


def schema(num_negatives: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("query", pa.string(), nullable=False),
            pa.field("pos", _TEXTS, nullable=False),
            pa.field("neg", _TEXTS, nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
        ]
    )


def record(row: ExportRow, num_negatives: int) -> dict[str, Any]:
    return {
        "query": row.query,
        "pos": [row.positive],
        "neg": row.negatives[:num_negatives],
        "prompt": row.prompt,
    }


def usage(export_dir: str, instruction_stripped: bool) -> str:
    prompt = (
        "    --query_instruction_for_retrieval 'unused: each line has its prompt' \\\n"
        "    --query_instruction_format 'Instruct: {}\\nQuery: {}' \\\n"
        if instruction_stripped
        else ""
    )
    return f"""```bash
torchrun --nproc_per_node 1 -m FlagEmbedding.finetune.embedder.encoder_only.base \\
    --model_name_or_path BAAI/bge-base-en-v1.5 \\
    --train_data {export_dir}/data \\
    --train_group_size 4 \\
{prompt}    --output_dir bge-finetuned
```"""


FORMAT = TrainerFormat(
    name="flagembedding",
    file_format="jsonl",
    schema=schema,
    record=record,
    usage=usage,
)
