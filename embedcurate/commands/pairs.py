"""`embedcurate pairs`: sources into the pairs table (shards, manifest, stage report).

embedcurate pairs --beir DIR --split train [--task NAME] [--on-error drop] --out OUT
embedcurate pairs --blend BLEND.yaml --out OUT
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import BlendConfig, load_blend, parse_blend
from embedcurate.pipeline.errors import EmbedCurateError
from embedcurate.pipeline.report import StageReport


def _source_name(folder: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", folder.resolve().name).strip("-") or "beir"


def _beir_blend(
    folder: Path, split: str, task: str | None, on_error: str, max_rows: int | None, seed: int
) -> BlendConfig:
    """A one-source blend for a BEIR folder; the task defaults to the folder's name."""
    from embedcurate.pipeline.instructions import load_instruction_table

    name = _source_name(folder)
    task_name = task or folder.resolve().name
    table = load_instruction_table()
    if task is None and task_name not in table:
        fail(
            f"{folder}: the folder name {task_name!r} is not a task in the instruction table; "
            f"name one with --task. Known tasks: {', '.join(table.names)}"
        )
    source: dict[str, Any] = {
        "name": name,
        "kind": "beir",
        "path": str(folder),
        "split": split,
        "task": task_name,
        "on_error": on_error,
    }
    if max_rows is not None:
        source["max_rows"] = max_rows
    return parse_blend(
        {"name": f"pairs-{name}", "seed": seed, "sources": [source]}, source="--beir options"
    )


def print_summary(report: StageReport, out: Path) -> None:
    """Rows per source, then drops per source and reason, then where the shards are."""
    details = report.details.get("sources", {})
    table = Table(title=f"pairs -> {out / 'pairs'}")
    for column in ("source", "task", "type", "stage", "read", "rows", "dropped", "docs"):
        numeric = column in ("stage", "read", "rows", "dropped", "docs")
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
        f"{report.num_kept} rows from {len(report.sources)} source(s) in "
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
    split: Annotated[str, typer.Option(help="BEIR qrels split")] = "train",
    task: Annotated[
        str | None,
        typer.Option(help="instruction-table task (default: the BEIR folder's name)"),
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="bad input: raise (stop) or drop (count)")
    ] = "raise",
    max_rows: Annotated[int | None, typer.Option(help="cap on BEIR pairs rows")] = None,
    seed: Annotated[int, typer.Option(help="seed for row selection (BEIR)")] = 0,
) -> None:
    """Read sources into pairs shards, with a manifest and a stage report per source."""
    from embedcurate.pipeline.sources.stage import run_sources

    if (beir is None) == (blend_path is None):
        fail("give exactly one of --beir DIR or --blend BLEND.yaml")
    if on_error not in ("raise", "drop"):
        fail(f"--on-error must be raise or drop, not {on_error!r}")
    try:
        if beir is not None:
            if not beir.is_dir():
                fail(f"{beir}: not a folder")
            blend = _beir_blend(beir, split, task, on_error, max_rows, seed)
        else:
            assert blend_path is not None
            blend = load_blend(blend_path)
        if not blend.sources:
            fail(f"blend {blend.name} has no sources (only a generator); nothing to read")
        report = run_sources(blend.sources, out, blend)
    except EmbedCurateError as exc:
        fail(str(exc))
    print_summary(report, out)


def register(app: typer.Typer) -> None:
    app.command()(pairs)
