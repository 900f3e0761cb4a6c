"""`embedcurate generate`: synthetic pairs from an LLM (shards, manifest, stage report).

embedcurate generate --backend embedded --tasks 4 --examples-per-task 6 --out OUT
embedcurate generate --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME ...
embedcurate generate --blend BLEND.yaml --out OUT     (the blend's generator, teacher, seed)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from embedcurate.console import console, fail
from embedcurate.pipeline.blend import (
    BlendConfig,
    GenerateStageConfig,
    GeneratorConfig,
    load_blend,
)
from embedcurate.pipeline.errors import EmbedCurateError
from embedcurate.pipeline.report import StageReport


class Backend(StrEnum):
    embedded = "embedded"
    openai = "openai"
    vllm = "vllm"


class ModelKind(StrEnum):
    base = "base"
    chat = "chat"


def resolve_config(
    blend_path: Path | None, overrides: dict[str, Any], seed: int | None
) -> BlendConfig:
    """The blend (or a generator-only one) with the options given on the command line."""
    blend = load_blend(blend_path) if blend_path else None
    if blend is not None and blend.generator is None and overrides.get("backend") is None:
        fail(f"{blend_path}: the blend has no generator section; give --backend")
    base = blend.generator.model_dump() if blend and blend.generator else {}
    settings = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    if blend is None and overrides.get("model") is None and settings["backend"] != "embedded":
        fail("--model is required with the openai and vllm backends")
    try:
        generator = GeneratorConfig(**settings)
    except ValidationError as exc:
        fail(f"invalid generator options:\n{exc}")
    if blend is None:
        return BlendConfig(name="generate", seed=seed or 0, generator=generator)
    update: dict[str, Any] = {"generator": generator}
    if seed is not None:
        update["seed"] = seed
    return blend.model_copy(update=update)


def print_summary(report: StageReport, out: Path) -> None:
    """Kept and dropped per reason, the brainstorm, what the calls cost, where it went."""
    details = report.details
    table = Table(title=f"generate -> {out}")
    table.add_column("outcome")
    table.add_column("examples", justify="right", no_wrap=True)
    table.add_row("[green]kept[/]", str(report.num_kept))
    for reason, count in sorted(report.dropped.items(), key=lambda item: -item[1]):
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("[bold]generated[/]", str(report.num_in))
    console.print(table)
    for synthetic_type, stats in details.get("brainstorm", {}).items():
        refused = ", ".join(f"{r} {n}" for r, n in stats["dropped"].items()) or "none"
        console.print(
            f"brainstorm {synthetic_type}: {stats['num_kept']} task(s) from "
            f"{stats['num_proposed']} proposed in {stats['num_calls']} call(s); refused: {refused}",
            highlight=False,
        )
    calls = details.get("calls", {})
    speed = calls.get("completion_tokens_per_s")
    console.print(
        f"{details.get('backend')} {details.get('model')} ({details.get('prompt_form')} prompts, "
        f"guided JSON {'on' if details.get('guided_json') else 'off'}): "
        f"{calls.get('num_requests', 0)} request(s), {calls.get('num_cache_hits', 0)} from cache, "
        f"{calls.get('num_backend_calls', 0)} sent, {calls.get('completion_tokens', 0)} tokens"
        + (f" at {speed} tokens/s" if speed else ""),
        highlight=False,
    )
    console.print(
        f"{report.num_kept} rows in {report.elapsed_s:.1f} s; report {out / 'report.json'}",
        highlight=False,
    )


def generate(
    out: Annotated[Path, typer.Option("--out", help="folder for the pairs shards and report")],
    backend: Annotated[
        Backend | None, typer.Option("--backend", help="default: embedded, or the blend's")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible server, e.g. .../v1")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="model name or path")] = None,
    model_kind: Annotated[
        ModelKind | None, typer.Option("--model-kind", help="prompt form: base or chat")
    ] = None,
    tasks: Annotated[
        int | None, typer.Option("--tasks", help="task definitions per task type")
    ] = None,
    examples_per_task: Annotated[
        int | None, typer.Option("--examples-per-task", help="examples per task")
    ] = None,
    task_type: Annotated[
        list[str] | None,
        typer.Option(
            "--task-type",
            help="short-long, long-short, short-short, long-long, sts, classification (repeatable)",
        ),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency")] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="seconds per request (blend: generator.timeout_s)"),
    ] = None,
    guided_json: Annotated[
        bool | None, typer.Option("--guided-json/--no-guided-json", help="default: by backend")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="default ~/.cache/embedcurate")
    ] = None,
    blend_path: Annotated[
        Path | None, typer.Option("--blend", help="take generator, teacher and seed from a blend")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
) -> None:
    """Brainstorm tasks and generate examples with an LLM; write filtered pairs shards."""
    from embedcurate.pipeline.generation.stage import run_generate

    overrides: dict[str, Any] = {
        "backend": backend.value if backend else (None if blend_path else "embedded"),
        "base_url": base_url,
        "model": model,
        "model_kind": model_kind.value if model_kind else None,
        "num_tasks": tasks,
        "examples_per_task": examples_per_task,
        "task_types": task_type,
        "max_tokens": max_tokens,
        "concurrency": concurrency,
        "timeout_s": timeout,
        "guided_json": guided_json,
        "cache_dir": cache_dir,
    }
    try:
        blend = resolve_config(blend_path, overrides, seed)
        report = run_generate(out, GenerateStageConfig.of(blend), progress=True)
    except EmbedCurateError as exc:
        fail(str(exc))
    print_summary(report, out)


def register(app: typer.Typer) -> None:
    app.command()(generate)
