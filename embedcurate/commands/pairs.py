"""`embedcurate pairs`: sources into the pairs table (shards, manifest, stage report).

embedcurate pairs --beir DIR --split train [--task NAME] [--on-error drop] --out OUT
embedcurate pairs --blend BLEND.yaml --out OUT
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import load_blend
from embedcurate.pipeline.errors import EmbedCurateError
from embedcurate.pipeline.report import StageReport


class OnError(StrEnum):
    raise_ = "raise"
    drop = "drop"


def print_summary(report: StageReport, out: Path) -> None:
    """Rows per source, then drops per source and reason, then where the shards are."""
    details = report.details.get("sources", {})
    table = Table(title=f"pairs -> {out / 'pairs'}")
    for column in ("source", "task", "type", "stage", "read", "kept", "dropped", "rows", "docs"):
        numeric = column in ("stage", "read", "kept", "dropped", "rows", "docs")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=numeric)
    for name, counts in sorted(report.sources.items()):
        info = details.get(name, {})
        docs = info.get("num_docs")
        table.add_row(
            name,
            str(info.get("task_name", "")),
            str(info.get("task_type", "")),
            str(info.get("stage", "")),
            str(counts.num_in),
            str(counts.num_kept),
            str(counts.num_dropped),
            str(counts.rows_written),
            "-" if docs is None else str(docs),
        )
    console.print(table)
    if report.dropped:
        drops = Table(title="dropped, by reason")
        drops.add_column("source")
        drops.add_column("reason")
        drops.add_column("rows", justify="right", no_wrap=True)
        for name, counts in sorted(report.sources.items()):
            for reason, count in sorted(counts.dropped.items()):
                drops.add_row(name, reason, str(count))
        console.print(drops)
    for name in sorted(details):
        info = details[name]
        console.print(f"[bold]{name}[/]: pairs {info['pairs_dir']}", highlight=False)
        if info.get("corpus_dir"):
            console.print(f"  corpus {info['corpus_dir']}", highlight=False)
    console.print(
        f"{report.num_rows} rows from {len(report.sources)} source(s) in "
        f"{report.elapsed_s:.1f} s; report {out / 'pairs' / 'report.json'}",
        highlight=False,
    )


def pairs(
    out: Annotated[Path, typer.Option("--out", help="run folder: writes pairs/ and corpus/")],
    beir: Annotated[
        Path | None, typer.Option("--beir", help="a BEIR folder (corpus, queries, qrels)")
    ] = None,
    blend_path: Annotated[
        Path | None, typer.Option("--blend", help="a blend YAML: read all its sources")
    ] = None,
    split: Annotated[str | None, typer.Option(help="BEIR qrels split [default: train]")] = None,
    task: Annotated[
        str | None,
        typer.Option(help="instruction-table task (default: the BEIR folder's name)"),
    ] = None,
    on_error: Annotated[
        OnError | None, typer.Option("--on-error", help="bad input: raise (stop) or drop (count)")
    ] = None,
    max_rows: Annotated[int | None, typer.Option(help="cap on BEIR pairs rows")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for row selection (BEIR)")] = None,
) -> None:
    """Read sources into pairs shards, with a manifest and a stage report per source."""
    from embedcurate.pipeline.sources.ingest import one_source_blend
    from embedcurate.pipeline.stages import run_stages

    if (beir is None) == (blend_path is None):
        fail("give exactly one of --beir DIR or --blend BLEND.yaml")
    try:
        if beir is not None:
            blend = one_source_blend(
                beir,
                given_as="beir",
                blend_name="pairs",
                task_hint="name one with --task",
                overrides={"seed": seed},
                source={
                    "split": split,
                    "task": task,
                    "on_error": on_error.value if on_error else None,
                    "max_rows": max_rows,
                },
            )
        else:
            assert blend_path is not None
            blend = load_blend(blend_path)
        if not blend.sources:
            fail(f"blend {blend.name} has no sources (only a generator); nothing to read")
        _, reports = run_stages(blend, out, ["sources"])
    except EmbedCurateError as exc:
        fail(str(exc))
    print_summary(reports["sources"], out)


def register(app: typer.Typer) -> None:
    app.command()(pairs)
