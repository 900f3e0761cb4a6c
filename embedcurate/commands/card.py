"""`embedcurate card DIR`: show, export or (re)render the data card of a shard set."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import BlendConfig, load_blend
from embedcurate.pipeline.card.render import format_value
from embedcurate.pipeline.errors import EmbedCurateError

CARD_JSON = "card.json"
RUN_FOLDERS = ("pairs", "clean", "mined", "corpus")


def default_run_dir(card_dir: Path) -> Path:
    """The curate run folder when DIR is its `train/`, else DIR itself (a bare shard set)."""
    parent = card_dir.resolve().parent
    return parent if any((parent / name).is_dir() for name in RUN_FOLDERS) else card_dir


def _load_blend(blend_path: Path | None) -> BlendConfig | None:
    if blend_path is None:
        return None
    try:
        return load_blend(blend_path)
    except EmbedCurateError as exc:
        fail(str(exc))


def _table(title: str, headers: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(format_value(value) for value in row))
    return table


def show_card(card: dict[str, Any], card_dir: Path) -> None:
    """The card's main figures as rich tables (the README holds the full text)."""
    dataset, figures = card.get("dataset"), card.get("figures")
    if dataset and figures:
        stages = ", ".join(f"stage {k}: {v:,}" for k, v in figures["rows"]["by_stage"].items())
        headline = (
            f"{dataset['num_rows']:,} rows ({stages}) in {dataset['num_shards']} shard(s) of "
            f"the {dataset['kind']} table"
        )
    else:
        headline = "[yellow]planned, not run:[/] no shards, so no counts"
    console.print(Panel(f"{headline}\n{card.get('description') or ''}".strip(), title=card["name"]))
    console.print(
        _table(
            "Sources",
            ["source", "kind", "task type", "stage", "licence", "rows in shards"],
            [
                [
                    s["name"],
                    s["kind"],
                    s["task_type"],
                    s["stage"],
                    s["license"],
                    s["rows_in_shards"],
                ]
                for s in card["sources"]
            ],
        )
    )
    if card["stages"]:
        console.print(
            _table(
                "Rows through the stages",
                ["stage", "report", "in", "kept", "dropped", "reasons"],
                [
                    [e.get("stage"), e["report"], e.get("num_in"), e.get("num_kept"),
                     e.get("num_dropped"), e.get("dropped") or e.get("problem")]
                    for e in card["stages"]
                ],
            )
        )  # fmt: skip
    if figures:
        _show_figures(figures)
    decontamination = card["decontamination"]
    flagged = {
        source: counts["rows"]
        for report in decontamination["reports"]
        for source, counts in report.get("flagged_rows", {}).items()
    }
    console.print(
        f"[bold]Decontamination:[/] {decontamination['status']}"
        + (f"; rows flagged per source: {format_value(flagged)}" if flagged else "")
    )
    lineage = card["lineage"]
    console.print(
        _table(
            "Lineage",
            ["", ""],
            [[key, lineage.get(key)] for key in ("run_id", "config_hash", "code_version", "seeds")],
        )
    )
    if card.get("plots"):
        console.print(
            "[bold]Plots:[/] " + ", ".join(str(card_dir / p) for p in card["plots"].values())
        )
    for note in card.get("unknowns", []):
        console.print(f"[yellow]unknown:[/] {note}")
    console.print(f"Full card: {card_dir / 'README.md'}")


def _show_figures(figures: dict[str, Any]) -> None:
    columns = ["count", "mean", "min", "p50", "max"]
    summaries = dict(figures["lengths"])
    if figures.get("scores"):
        summaries = {f"{k} score": v for k, v in figures["scores"].items()} | {
            f"{k} chars": v for k, v in figures["lengths"].items()
        }
    console.print(
        _table(
            "Scores and lengths",
            ["", *columns],
            [[name, *(s.get(c) for c in columns)] for name, s in summaries.items()],
        )
    )
    console.print(
        _table(
            "Negatives per row",
            ["negatives", "rows"],
            [[k, n] for k, n in figures["negatives_per_row"].items()],
        )
    )
    console.print(
        _table(
            "In-batch collisions (stage 1)",
            ["", "rows"],
            [[k, n] for k, n in figures["collisions"].items()],
        )
    )
    for task, labels in figures["labels"].items():
        console.print(_table(f"Rows per label: {task}", ["label", "rows"], list(labels.items())))


def card(
    card_dir: Annotated[
        Path, typer.Argument(help="the shard folder holding (or to hold) the card")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print card.json for programs")] = False,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="write a standalone HTML page here")
    ] = None,
    render: Annotated[
        bool, typer.Option("--render", help="(re)render the card from the shards and reports")
    ] = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="render a card from --blend alone (a blend not run)")
    ] = False,
    blend_path: Annotated[
        Path | None, typer.Option("--blend", help="the blend (default: the one in the manifest)")
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="where to look for stage reports (default: DIR's run)"),
    ] = None,
) -> None:
    """Show the data card of a shard set; --json, --html OUT; --render or --plan to write it."""
    from embedcurate.pipeline.card.build import render_plan_card, run_card
    from embedcurate.pipeline.card.render import render_html

    blend = _load_blend(blend_path)
    try:
        if plan:
            if blend is None:
                fail("--plan needs --blend BLEND.yaml")
            render_plan_card(blend, card_dir)
        elif render:
            run_card(card_dir, run_dir or default_run_dir(card_dir), blend)
    except EmbedCurateError as exc:
        fail(str(exc))
    card_path = card_dir / CARD_JSON
    if not card_path.is_file():
        fail(f"{card_path}: no card here; write one with --render [--blend BLEND.yaml]")
    text = card_path.read_text(encoding="utf-8")
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(render_html(card_dir), encoding="utf-8")
        if not as_json:
            console.print(f"wrote {html_out}")
    if as_json:
        sys.stdout.write(text)
    elif html_out is None:
        show_card(json.loads(text), card_dir)


def register(app: typer.Typer) -> None:
    app.command()(card)
