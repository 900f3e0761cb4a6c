"""`embedcurate export SHARDS_DIR --format F --out DIR`: train shards for another trainer.

Formats: `sentence-transformers` (Parquet n-tuples for `SentenceTransformerTrainer`),
`flagembedding` (JSON Lines for FlagEmbedding's fine-tuning) and `tevatron` (grouped JSON Lines
with the mined set's ids). The options left out keep the library's defaults (`ExportConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from embedcurate.console import console, fail
from embedcurate.pipeline.errors import EmbedCurateError


def export(
    shards_dir: Annotated[Path, typer.Argument(help="a train shard set (a run's train/ folder)")],
    format: Annotated[
        str, typer.Option("--format", help="sentence-transformers, flagembedding or tevatron")
    ],
    out: Annotated[Path, typer.Option("--out", help="a new folder for the export")],
    num_negatives: Annotated[
        int | None,
        typer.Option("--num-negatives", help="negatives per row (default: the most rows have)"),
    ] = None,
    on_short: Annotated[
        str | None,
        typer.Option("--on-short", help="rows with fewer negatives: drop (default) or keep"),
    ] = None,
    strip_instruction: Annotated[
        bool | None,
        typer.Option(
            "--strip-instruction/--keep-instruction",
            help="take `Instruct: ...\\nQuery: ` off the texts (FlagEmbedding: into `prompt`)",
        ),
    ] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="1, 2 or all (default)")] = None,
    mined: Annotated[
        Path | None,
        typer.Option("--mined", help="the mined set, for tevatron's ids (default: RUN/mined)"),
    ] = None,
) -> None:
    """Write the train shards in the layout of another trainer, with a card and croissant.json."""
    from embedcurate.pipeline.export import FORMATS, ExportConfig, run_export

    if format not in FORMATS:
        fail(f"--format {format}: unknown format; choose one of {', '.join(FORMATS)}")
    options: dict[str, Any] = {
        "num_negatives": num_negatives,
        "on_short": on_short,
        "strip_instruction": strip_instruction,
        "stage": stage,
    }
    try:
        cfg = ExportConfig(format=format, **{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in exc.errors()
        )
        fail(problems)
    try:
        report = run_export(shards_dir, out, cfg, mined_dir=mined)
    except EmbedCurateError as exc:
        fail(str(exc))
    dropped = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.dropped.items()))
    console.print(
        f"[green]exported[/] {report.num_kept} of {report.num_in} rows to {out} "
        f"({cfg.format}, {report.details['num_negatives']} negatives per row"
        + (f"; dropped {dropped})" if dropped else ")")
    )


def register(app: typer.Typer) -> None:
    app.command()(export)
