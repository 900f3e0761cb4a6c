"""The short card of an export: what it holds, where it came from, and how a trainer reads it.

README.md names the source shard set by content hash (the manifest's shard hashes), lists the
rows kept and dropped per source with the reasons, the licence of each source, and the few
lines of the trainer that read the files; croissant.json describes the files for programs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from embedcurate.pipeline.atomic import write_bytes_atomic
from embedcurate.pipeline.blend import BlendConfig
from embedcurate.pipeline.card.build import blend_from_manifest, collect_reports
from embedcurate.pipeline.card.croissant import (
    build_croissant,
    source_licenses,
    write_croissant,
)
from embedcurate.pipeline.card.hub import license_fields
from embedcurate.pipeline.card.render import table
from embedcurate.pipeline.export.types import TrainerFormat
from embedcurate.pipeline.manifest import Manifest
from embedcurate.pipeline.report import StageReport

README_NAME = "README.md"


def _header(
    blend: BlendConfig | None, trainer: TrainerFormat, export: Manifest, licenses: dict[str, str]
) -> dict[str, Any]:
    suffix = Path(export.shards[0].file).suffix
    return {
        "pretty_name": f"{blend.name if blend else 'embedcurate'} training data for {trainer.name}",
        **license_fields(licenses.values()),
        "source_licenses": licenses,
        "task_categories": ["feature-extraction", "sentence-similarity"],
        "tags": ["embeddings", "hard-negatives", "embedcurate", trainer.name],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{trainer.data_subdir}/*{suffix}"}],
            }
        ],
    }


def _counts_table(report: StageReport) -> str:
    rows = [
        [name, counts.num_in, counts.num_kept, ", ".join(f"{r}: {n}" for r, n in sorted(
            counts.dropped.items())) or "none"]
        for name, counts in sorted(report.sources.items())
    ]  # fmt: skip
    return table(["source", "rows in", "kept", "dropped (reason: rows)"], rows)


def render_export_card(
    header: dict[str, Any],
    out_name: str,
    export: Manifest,
    source: Manifest,
    trainer: TrainerFormat,
    report: StageReport,
) -> str:
    cfg = export.config
    origin = export.extra["source"]
    instruction = (
        "stripped from the texts (FlagEmbedding lines carry it as `prompt`)"
        if cfg["strip_instruction"]
        else "kept in the texts (`Instruct: {task}\\nQuery: {query}`)"
    )
    licenses = table(["source", "licence"], sorted(header["source_licenses"].items()))
    return f"""---
{yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip()}
---

# {header["pretty_name"]}

**{export.num_rows} rows** for {trainer.name}, in {len(export.shards)} file(s) under
`{trainer.data_subdir}/`, exported by `embedcurate export` from the train shard set
`{origin["path"]}` ({source.num_rows} rows, content hash `{origin["content_hash"]}`).

- negatives per row: {cfg["num_negatives"]} (rows with fewer: {cfg["on_short"]})
- stage: {cfg["stage"]}
- instruction: {instruction}

## Sources

Each row keeps the licence of its source.

{licenses}

## Rows kept and dropped

{_counts_table(report)}

## Train with it

{trainer.usage(out_name, bool(cfg["strip_instruction"]))}
"""


def write_export_card(
    tmp_dir: Path,
    out_dir: Path,
    export: Manifest,
    source: Manifest,
    trainer: TrainerFormat,
    report: StageReport,
    train_dir: Path,
) -> None:
    """README.md and croissant.json in the (temporary) export folder."""
    blend = blend_from_manifest(source)
    licenses = source_licenses(blend, [name for name, c in report.sources.items() if c.num_kept])
    header = _header(blend, trainer, export, licenses)
    text = render_export_card(header, out_dir.name, export, source, trainer, report)
    write_bytes_atomic(tmp_dir / README_NAME, text.encode("utf-8"))
    run_dir = train_dir.parent if (train_dir.parent / "mined").is_dir() else train_dir
    upstream = [
        found.report
        for found in collect_reports(run_dir, train_dir)
        if found.report and found.report.stage != report.stage  # not earlier exports
    ]
    croissant = build_croissant(
        export,
        trainer.schema(export.config["num_negatives"]),
        name=header["pretty_name"],
        description=(
            f"{trainer.name} export of the embedcurate train shard set with content hash "
            f"{export.extra['source']['content_hash']}."
        ),
        blend=blend,
        reports=[*upstream, report],
        licenses=licenses,
    )
    write_croissant(tmp_dir, croissant)
