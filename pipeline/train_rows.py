"""The template stage: the mined set into train shards with NV-Embed's instruction template.

Each query becomes ``Instruct: {task definition}\\nQuery: {query}`` and its row records
`query_instruction_chars`, the length of that prefix, so the model can leave the instruction
out of pooling (arXiv 2405.17428, section 4: instruction tokens are masked out of the output
embedding in training and evaluation). Documents stay as they are, except for symmetric tasks
(STS, and classification/clustering whose documents are examples like the query): there the
positive and every negative get the same template and `doc_instruction_chars` says how long
it is. Negatives are cut to `mining.num_negatives`, hardest first as mining left them; their
scores follow them. Labels, teacher and rule are carried for training and the data card, and
so are `extra_positives` (texts a judge relabelled as positives; the trainer masks them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from embedcurate.pipeline.blend import TemplateStageConfig
from embedcurate.pipeline.instructions import INSTRUCTION_PREFIX, render
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import ShardWriter, iter_shards, require_valid

logger = logging.getLogger(__name__)


def template_row(row: dict[str, Any], num_negatives: int) -> dict[str, Any]:
    """One MINED row as a TRAIN row."""
    definition = row["instruction"] or ""
    query = render(definition, row["query"])
    negatives = list(row["negatives"] or [])[:num_negatives]
    neg_scores = row["neg_scores"]
    positive = row["positive"]
    extra_positives = row.get("extra_positives")
    doc_chars = 0
    if row["symmetric"] and definition:
        rendered_positive = render(definition, positive)
        positive = rendered_positive.text
        negatives = [render(definition, negative).text for negative in negatives]
        if extra_positives:
            extra_positives = [render(definition, text).text for text in extra_positives]
        doc_chars = rendered_positive.instruction_chars
    return {
        "example_id": row["example_id"],
        "source": row["source"],
        "task_type": row["task_type"],
        "task_name": row["task_name"],
        "stage": row["stage"],
        "instruction": definition,
        "query": query.text,
        "query_instruction_chars": query.instruction_chars,
        "positive": positive,
        "negatives": negatives,
        "doc_instruction_chars": doc_chars,
        "pos_score": row["pos_score"],
        "neg_scores": None if neg_scores is None else list(neg_scores)[:num_negatives],
        "label": row["label"],
        "teacher": row["teacher"],
        "mining_rule": row["mining_rule"],
        "extra_positives": extra_positives or None,
    }


def run_template(
    mined_dir: Path,
    out_dir: Path,
    cfg: TemplateStageConfig,
    *,
    provenance: dict[str, Any] | None = None,
) -> StageReport:
    """Template every row of the MINED set at `mined_dir` into TRAIN shards at `out_dir`.

    `provenance` (the resolved blend) is recorded in the manifest instead of the section,
    so the card can name the blend the shards came from.
    """
    mined_dir, out_dir = Path(mined_dir), Path(out_dir)
    mined_manifest = require_valid(mined_dir, TableKind.MINED)
    num_negatives = cfg.num_negatives
    report = StageReport(stage="template", out_dir=str(out_dir))
    short_rows: dict[str, int] = {}
    untemplated: dict[str, int] = {}
    writer = ShardWriter(
        out_dir,
        TableKind.TRAIN,
        rows_per_shard=cfg.rows_per_shard,
        config=provenance or cfg.portable(),
        seeds={"seed": cfg.seed},
        extra={
            "mined_config_hash": mined_manifest.config_hash,
            "template": INSTRUCTION_PREFIX + "{query}",
            "num_negatives": num_negatives,
        },
    )
    with writer:
        for table in iter_shards(mined_dir, TableKind.MINED, validate=False):
            rows = [template_row(row, num_negatives) for row in table.to_pylist()]
            for row in rows:
                report.read(row["source"])
                report.keep(row["source"])
                if len(row["negatives"]) < num_negatives:
                    short_rows[row["source"]] = short_rows.get(row["source"], 0) + 1
                if not row["instruction"]:
                    untemplated[row["source"]] = untemplated.get(row["source"], 0) + 1
            writer.write_rows(rows)
    report.details = {
        "num_negatives": num_negatives,
        "rows_with_fewer_negatives": dict(sorted(short_rows.items())),
        "rows_without_instruction": dict(sorted(untemplated.items())),
        "num_shards": len(writer.manifest.shards) if writer.manifest else 0,
    }
    if short_rows:
        logger.warning(
            "%d rows have fewer than %d negatives (mining.on_too_few kept them)",
            sum(short_rows.values()),
            num_negatives,
        )
    report.finish().save(out_dir)
    return report
