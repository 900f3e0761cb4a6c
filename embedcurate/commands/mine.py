"""`embedcurate mine`: a BEIR folder (or a pairs file and a corpus file) to mined train shards.

The command runs the same stage functions as the curate flow, into the curate run layout:
`OUT/pairs/<name>/` and `OUT/corpus/<name>/` (sources stage), `OUT/mined/` (this stage),
`OUT/train/` (template stage, with the data card beside the shards). `--calibrate` stops
after scoring and prints the score distributions and what each rule of a grid would drop,
writing only the pairs and corpus.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedcurate.console import console, fail, print_train_shards
from embedcurate.pipeline.blend import BlendConfig
from embedcurate.pipeline.errors import EmbedCurateError


class OnError(StrEnum):
    raise_ = "raise"
    drop = "drop"


def print_calibration(calibration: Any) -> None:
    keys = ("count", "mean", "p05", "p25", "median", "p75", "p95")
    scores = Table(title=f"scores ({calibration.teacher}, {calibration.num_rows} rows)")
    scores.add_column("")
    for key in keys:
        scores.add_column(key, justify="right")
    for name, summary in (
        ("positive", calibration.pos_score),
        ("hardest candidate", calibration.top1_score),
        ("window candidates", calibration.window_score),
    ):
        scores.add_row(name, *(str(summary.get(k, "")) for k in keys))
    console.print(scores)
    grid = Table(title="share of window candidates each rule drops")
    grid.add_column("rule")
    grid.add_column("dropped", justify="right")
    for rule, share in calibration.dropped_share.items():
        grid.add_row(rule, f"{share:.1%}")
    console.print(grid)


def print_report(report: Any, out: Path) -> None:
    details = report.details
    table = Table(title=f"mined -> {out}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("rows in", report.num_in),
        ("rows kept", report.num_kept),
        *((f"dropped: {reason}", n) for reason, n in sorted(report.dropped.items())),
        ("documents", details["num_docs"]),
        ("texts encoded (cache misses)", details["texts_encoded"]),
        ("cache hits", details["cache"]["hits"]),
        ("positive score median", details["pos_score"].get("median", "")),
        ("negative score median", details["neg_score"].get("median", "")),
        ("candidates dropped by rule", f"{details['dropped_share']:.1%}"),
        ("seconds", report.elapsed_s),
        ("documents / s", details["docs_per_s"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def mine(
    out: Annotated[Path, typer.Option("--out", help="run folder (pairs, corpus, mined, train)")],
    beir: Annotated[Path | None, typer.Option(help="BEIR folder")] = None,
    split: Annotated[str | None, typer.Option(help="BEIR qrels split [default: train]")] = None,
    pairs: Annotated[Path | None, typer.Option(help="pairs file (.jsonl/.csv/.parquet)")] = None,
    corpus: Annotated[Path | None, typer.Option(help="corpus JSONL (_id, title, text)")] = None,
    task: Annotated[str | None, typer.Option(help="instruction-table task name")] = None,
    instruction: Annotated[str | None, typer.Option(help="task definition (overrides)")] = None,
    on_error: Annotated[
        OnError | None, typer.Option("--on-error", help="bad input: raise (stop) or drop (count)")
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="teacher model: path or id")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean, cls or last")] = None,
    query_instruction: Annotated[str | None, typer.Option(help="teacher query prefix")] = None,
    document_prefix: Annotated[str | None, typer.Option(help="teacher document prefix")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16 or bfloat16")] = None,
    quantize: Annotated[str | None, typer.Option(help="none or int8 (CPU)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="teacher batch size")] = None,
    rule: Annotated[str | None, typer.Option(help="percpos:P, marginpos:M, abs:T or none")] = None,
    num_negatives: Annotated[int | None, typer.Option(help="negatives per row")] = None,
    range_min: Annotated[int | None, typer.Option(help="first rank considered")] = None,
    range_max: Annotated[int | None, typer.Option(help="rank window end (exclusive)")] = None,
    sampling: Annotated[str | None, typer.Option(help="top or random")] = None,
    on_too_few: Annotated[str | None, typer.Option(help="keep or drop short rows")] = None,
    index: Annotated[str | None, typer.Option(help="flat (exact) or ivf")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for random sampling")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="embedding cache folder")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write it")] = False,
    rows_per_shard: Annotated[int | None, typer.Option(help="rows per output shard")] = None,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="print score distributions and rule drop shares")
    ] = False,
    calibrate_rows: Annotated[int, typer.Option(help="rows scored by --calibrate")] = 2000,
) -> None:
    """Mine hard negatives with a teacher on FAISS; write mined rows and train shards.

    Every option left out takes the blend default (`embedcurate blend check` prints them).
    """
    from embedcurate.pipeline.sources.ingest import one_source_blend

    if (beir is None) == (pairs is None):
        fail("give exactly one of --beir DIR or --pairs FILE")
    teacher_options = {
        "model": teacher,
        "pooling": pooling,
        "query_instruction": query_instruction,
        "document_prefix": document_prefix,
        "dtype": dtype,
        "quantize": quantize,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
        "cache": False if no_cache else None,
    }
    mining_options = {
        "rule": rule,
        "num_negatives": num_negatives,
        "range_min": range_min,
        "range_max": range_max,
        "sampling": sampling,
        "on_too_few": on_too_few,
        "index": index,
    }
    try:
        blend = one_source_blend(
            (beir or pairs),  # type: ignore[arg-type]
            given_as="beir" if beir is not None else "pairs",
            blend_name="mine",
            task_hint="name one with --task, or define it with --instruction",
            overrides={
                "seed": seed,
                "teacher": _given(teacher_options),
                "mining": _given(mining_options),
                "output": _given({"rows_per_shard": rows_per_shard}),
            },
            source={
                "split": split,
                "task": task,
                "instruction": instruction,
                "on_error": on_error.value if on_error else None,
            },
        )
        run_command(blend, out, corpus, calibrate, calibrate_rows)
    except EmbedCurateError as exc:
        fail(str(exc))


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave: the rest keep the config models' defaults."""
    return {key: value for key, value in options.items() if value is not None}


def run_command(
    blend: BlendConfig,
    out: Path,
    corpus_file: Path | None,
    calibrate: bool,
    calibrate_rows: int,
) -> None:
    """The registry's stages sources -> (corpus file) -> mine -> template -> card."""
    from embedcurate.pipeline.blend import MineStageConfig
    from embedcurate.pipeline.mining.calibration import calibrate_mining
    from embedcurate.pipeline.mining.stage import MineInputs
    from embedcurate.pipeline.sources.ingest import add_corpus_file
    from embedcurate.pipeline.stages import run_stages

    (source,) = blend.sources
    tables, _ = run_stages(blend, out, ["sources"])
    if corpus_file is not None:
        corpus_dir = out / "corpus" / source.name
        added = add_corpus_file(corpus_file.resolve(), corpus_dir, source.name)
        console.print(f"corpus: {added} documents added from {corpus_file}")
        tables["corpus"] = [corpus_dir]
    if calibrate:
        inputs = MineInputs(
            pairs_dirs=tables["pairs"], corpus_dirs={d.name: d for d in tables.get("corpus", [])}
        )
        calibration = calibrate_mining(inputs, MineStageConfig.of(blend), max_rows=calibrate_rows)
        print_calibration(calibration)
        return
    _, reports = run_stages(blend, out, ["mine", "template", "card"], tables=tables)
    print_report(reports["mine"], out / "mined")
    print_train_shards(reports["template"].num_kept, out / "train")


def register(app: typer.Typer) -> None:
    app.command()(mine)
