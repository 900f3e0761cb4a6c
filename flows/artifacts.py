"""Publish a curate run's data card and counts to Prefect as artifacts (seen in the UI)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from embedcurate.pipeline.manifest import read_manifest


def artifact_key(prefix: str, name: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')}"


def stage_count_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One row per (stage report, source): rows in, kept, dropped and the top drop reasons.

    Only reports that sit beside a shard set count, so a summary report over several sets
    (e.g. `pairs/report.json`) is not counted twice.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(run_dir.rglob("report.json")):
        if not (path.parent / "manifest.json").exists():
            continue  # a summary report beside no shard set; its sources report on their own
        report = json.loads(path.read_text(encoding="utf-8"))
        for source, counts in report.get("sources", {}).items():
            reasons = sorted(counts["dropped"].items(), key=lambda kv: -kv[1])[:3]
            rows.append(
                {
                    "stage": report["stage"],
                    "output": str(path.parent.relative_to(run_dir)),
                    "source": source,
                    "in": counts["num_in"],
                    "kept": counts["num_kept"],
                    "dropped": counts["num_dropped"],
                    "top reasons": ", ".join(f"{r} ({n})" for r, n in reasons),
                }
            )
    order = {"sources": 0, "generate": 1, "decontaminate": 2, "mine": 3, "template": 4}
    return sorted(rows, key=lambda row: (order.get(row["stage"], 9), row["source"]))


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
