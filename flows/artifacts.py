"""Publish a curate run's data card and counts to Prefect as artifacts (seen in the UI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from embedcurate.pipeline.card.build import collect_reports
from embedcurate.pipeline.manifest import read_manifest


def artifact_key(prefix: str, name: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')}"


def stage_count_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One row per (stage report, source): records in, kept, dropped, rows written (a kept STS
    pair writes two) and the top drop reasons.

    The reports come from the card's collector, so this table and the card count alike.
    """
    rows: list[dict[str, Any]] = []
    for found in collect_reports(run_dir, run_dir / "train"):
        if found.report is None:
            continue
        for source, counts in sorted(found.report.sources.items()):
            reasons = sorted(counts.dropped.items(), key=lambda kv: -kv[1])[:3]
            rows.append(
                {
                    "stage": found.report.stage,
                    "output": str(Path(found.path).parent),
                    "source": source,
                    "in": counts.num_in,
                    "kept": counts.num_kept,
                    "dropped": counts.num_dropped,
                    "rows": counts.rows_written,
                    "top reasons": ", ".join(f"{r} ({n})" for r, n in reasons),
                }
            )
    return rows


def publish_card(blend_name: str, train_dir: Path, run_dir: Path) -> None:
    manifest = read_manifest(train_dir)
    card = train_dir / "README.md"
    body = card.read_text(encoding="utf-8") if card.exists() else "(no data card was written)"
    create_markdown_artifact(
        key=artifact_key("data-card", blend_name),
        markdown=body,
        description=f"Data card of blend {blend_name}: {manifest.num_rows} train rows",
    )
    create_table_artifact(
        key=artifact_key("counts", blend_name),
        table=stage_count_rows(run_dir),
        description=f"Rows in, kept and dropped per stage and source for blend {blend_name}",
    )
