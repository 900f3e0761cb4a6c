"""`embedcurate mine`: a BEIR folder (or a pairs file and a corpus file) to mined train shards.

The command runs the same stage functions as the curate flow, into the curate run layout:
`OUT/pairs/<name>/` and `OUT/corpus/<name>/` (sources stage), `OUT/mined/` (this stage),
`OUT/train/` (template stage, with the data card beside the shards). `--calibrate` stops
after scoring and prints the score distributions and what each rule of a grid would drop,
writing only the pairs and corpus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import (
    BlendConfig,
    MiningConfig,
    OutputConfig,
    SourceConfig,
    TeacherConfig,
)
from embedcurate.pipeline.errors import EmbedCurateError
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import is_complete, read_shards, write_shards
from embedcurate.pipeline.sources.readers import iter_jsonl

PAIRS_SUFFIX_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


def source_name(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name) or "source"


def pairs_source(
    beir: Path | None, pairs: Path | None, split: str, task: str | None, instruction: str | None
) -> SourceConfig:
    """The one blend source the command reads: a BEIR folder or a flat pairs file."""
    if (beir is None) == (pairs is None):
        raise EmbedCurateError("give exactly one of --beir DIR or --pairs FILE")
    path = (beir or pairs).resolve()  # type: ignore[union-attr]
    if not path.exists():
        raise EmbedCurateError(f"{path}: not found")
    if beir is not None:
        kind = "beir"
    else:
        kind = "parquet" if path.suffix == ".parquet" else PAIRS_SUFFIX_KINDS.get(path.suffix)
        if kind is None:
            raise EmbedCurateError(f"{path}: --pairs takes .jsonl, .csv, .tsv or .parquet")
    return SourceConfig(
        name=source_name(path),
        kind=kind,  # type: ignore[arg-type]
        path=path,
        split=split,
        task=task,
        instruction=instruction,
    )


def add_corpus_file(corpus_file: Path, corpus_dir: Path, source: str) -> int:
    """Merge a corpus JSONL (`_id`, optional `title`, `text`) into the source's CORPUS set.

    Documents the sources stage wrote (the positives of a flat file) keep their ids; file
    documents with an id already present are skipped. Returns the number added.
    """
    from embedcurate.pipeline.errors import BadRowPolicy, InputError

    rows: dict[str, dict[str, Any]] = {}
    if is_complete(corpus_dir):
        for row in read_shards(corpus_dir, TableKind.CORPUS).to_pylist():
            rows[row["doc_id"]] = row
    before = len(rows)
    policy = BadRowPolicy("raise")
    for line_no, record in iter_jsonl(corpus_file, policy):
        doc_id = record.get("_id", record.get("doc_id", record.get("id")))
        text = record.get("text")
        if doc_id is None or not isinstance(text, str) or not text.strip():
            raise InputError(
                corpus_file, "needs an id (_id) and a non-empty string 'text'", line_no
            )
        rows.setdefault(
            str(doc_id),
            {"source": source, "doc_id": str(doc_id), "title": record.get("title"), "text": text},
        )
    from embedcurate.pipeline.schemas import rows_to_table

    write_shards(rows_to_table(list(rows.values()), TableKind.CORPUS), corpus_dir, TableKind.CORPUS)
    return len(rows) - before


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
    split: Annotated[str, typer.Option(help="BEIR qrels split")] = "train",
    pairs: Annotated[Path | None, typer.Option(help="pairs file (.jsonl/.csv/.parquet)")] = None,
    corpus: Annotated[Path | None, typer.Option(help="corpus JSONL (_id, title, text)")] = None,
    task: Annotated[str | None, typer.Option(help="instruction-table task name")] = None,
    instruction: Annotated[str | None, typer.Option(help="task definition (overrides)")] = None,
    teacher: Annotated[str, typer.Option(help="teacher model: path or id")] = TeacherConfig().model,
    pooling: Annotated[str, typer.Option(help="mean, cls or last")] = "mean",
    query_instruction: Annotated[str | None, typer.Option(help="teacher query prefix")] = None,
    document_prefix: Annotated[str | None, typer.Option(help="teacher document prefix")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16")] = "auto",
    quantize: Annotated[str, typer.Option(help="none or int8 (CPU)")] = "none",
    batch_size: Annotated[int, typer.Option(help="teacher batch size")] = 64,
    rule: Annotated[str, typer.Option(help="percpos:P, marginpos:M, abs:T or none")] = (
        MiningConfig().rule
    ),
    num_negatives: Annotated[int, typer.Option(help="negatives per row")] = 5,
    range_min: Annotated[int, typer.Option(help="first rank considered")] = 0,
    range_max: Annotated[int, typer.Option(help="rank window end (exclusive)")] = 50,
    sampling: Annotated[str, typer.Option(help="top or random")] = "top",
    on_too_few: Annotated[str, typer.Option(help="keep or drop rows short of negatives")] = (
        "drop"
    ),
    index: Annotated[str, typer.Option(help="flat (exact) or ivf")] = "flat",
    seed: Annotated[int, typer.Option(help="seed for random sampling")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="embedding cache folder")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write it")] = False,
    rows_per_shard: Annotated[int, typer.Option(help="rows per output shard")] = 20_000,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="print score distributions and rule drop shares")
    ] = False,
    calibrate_rows: Annotated[int, typer.Option(help="rows scored by --calibrate")] = 2000,
) -> None:
    """Mine hard negatives with a teacher on FAISS; write mined rows and train shards."""
    from pydantic import ValidationError

    try:
        source = pairs_source(beir, pairs, split, task, instruction)
        blend = BlendConfig(
            name=f"mine-{source.name}",
            seed=seed,
            sources=[source],
            teacher=TeacherConfig(
                model=teacher,
                pooling=pooling,  # type: ignore[arg-type]
                query_instruction=query_instruction,
                document_prefix=document_prefix,
                dtype=dtype,  # type: ignore[arg-type]
                quantize=quantize,  # type: ignore[arg-type]
                batch_size=batch_size,
                cache_dir=cache_dir,
            ),
            mining=MiningConfig(
                rule=rule,
                num_negatives=num_negatives,
                range_min=range_min,
                range_max=range_max,
                sampling=sampling,  # type: ignore[arg-type]
                on_too_few=on_too_few,  # type: ignore[arg-type]
                index=index,  # type: ignore[arg-type]
            ),
            output=OutputConfig(rows_per_shard=rows_per_shard),
        )
    except ValidationError as exc:
        fail(str(exc))
    except EmbedCurateError as exc:
        fail(str(exc))
    try:
        run_command(blend, source, out, corpus, calibrate, calibrate_rows, not no_cache)
    except EmbedCurateError as exc:
        fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name not in (
            "embedcurate.pipeline.sources.stage",
            "embedcurate.pipeline.train_rows",
            "embedcurate.pipeline.card.build",
        ):
            raise
        fail(f"this build lacks the stage module {exc.name}; `embedcurate mine` needs it")


def run_command(
    blend: BlendConfig,
    source: SourceConfig,
    out: Path,
    corpus_file: Path | None,
    calibrate: bool,
    calibrate_rows: int,
    use_cache: bool,
) -> None:
    """sources -> (corpus file) -> mine -> template -> card, in the curate run layout."""
    from embedcurate.pipeline.card.build import run_card
    from embedcurate.pipeline.mining.stage import MineInputs, calibrate_mining, run_mine
    from embedcurate.pipeline.sources.stage import run_sources
    from embedcurate.pipeline.train_rows import run_template

    run_sources([source], out, blend)
    pairs_dir = out / "pairs" / source.name
    corpus_dir = out / "corpus" / source.name
    if corpus_file is not None:
        added = add_corpus_file(corpus_file.resolve(), corpus_dir, source.name)
        console.print(f"corpus: {added} documents added from {corpus_file}")
    corpus_dirs = {source.name: corpus_dir} if is_complete(corpus_dir) else {}
    inputs = MineInputs(pairs_dirs=[pairs_dir], corpus_dirs=corpus_dirs)
    if calibrate:
        print_calibration(
            calibrate_mining(inputs, blend, max_rows=calibrate_rows, use_cache=use_cache)
        )
        return
    report = run_mine(inputs, out / "mined", blend, use_cache=use_cache)
    print_report(report, out / "mined")
    template_report = run_template(out / "mined", out / "train", blend)
    run_card(train_dir=out / "train", run_dir=out, cfg=blend)
    console.print(
        f"[green]train shards:[/] {template_report.num_kept} rows in {out / 'train'} "
        "(data card: README.md)"
    )


def register(app: typer.Typer) -> None:
    app.command()(mine)
