"""`embedcurate judge RUN_DIR`: audit, drop or relabel the false negatives of a mined run.

Reads `RUN_DIR/mined`, writes `RUN_DIR/judged` (a mined set with the judge's verdict and
score on every judged negative, and `report.json`), then re-renders `RUN_DIR/train` from it
and the data card beside it, whose "False negatives" section shows the audit. The judge
section is the mined blend's `judge:` when it has one, with the options given laid over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedcurate.console import console, fail, print_train_shards
from embedcurate.pipeline.blend import (
    BlendConfig,
    CrossEncoderJudgeConfig,
    JudgeConfig,
    NearDuplicateConfig,
)
from embedcurate.pipeline.errors import EmbedCurateError

JUDGE_FORMS = "llm, cross-encoder:PATH or cascade:PATH (PATH: a reranker's folder or hub id)"


def judge_choice(spec: str, base: JudgeConfig) -> dict[str, Any]:
    """`--judge` as JudgeConfig fields: `llm`, `cross-encoder:PATH` or `cascade:PATH`."""
    kind, _, model = spec.partition(":")
    if kind == "llm" and not model:
        return {"judge": "llm"}
    if kind in ("cross-encoder", "cascade") and model:
        current = base.cross_encoder
        cross = (
            current.model_copy(update={"model": model})
            if current is not None
            else CrossEncoderJudgeConfig(model=model)
        )
        return {"judge": kind, "cross_encoder": cross}
    raise EmbedCurateError(f"--judge {spec!r}: expected {JUDGE_FORMS}")


def near_duplicate_section(
    base: JudgeConfig, enabled: bool | None, threshold: float | None
) -> NearDuplicateConfig | None:
    """The near_duplicates section after `--near-duplicates/--no-...` and `--near-threshold`."""
    if enabled is False:
        return None
    current = base.near_duplicates
    if current is None and (enabled or threshold is not None):
        current = NearDuplicateConfig()
    if current is not None and threshold is not None:
        current = current.model_copy(update={"threshold": threshold})
    return current


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave (typer leaves the others None)."""
    return {k: v for k, v in options.items() if v is not None}


def judge_config(
    base: JudgeConfig,
    options: dict[str, Any],
    generator: dict[str, Any],
    near: NearDuplicateConfig | None,
    judge_spec: str | None,
    max_calls: int | None,
) -> JudgeConfig:
    """The base judge section with every option that was given laid over it, validated once."""
    fields = base.model_dump()
    fields.update(given(options))
    fields["llm"]["generator"].update(given(generator))
    if max_calls is not None:
        fields["llm"]["max_calls"] = max_calls
    fields["near_duplicates"] = None if near is None else near.model_dump()
    if judge_spec is not None:
        choice = judge_choice(judge_spec, base)
        fields["judge"] = choice["judge"]
        if "cross_encoder" in choice:
            fields["cross_encoder"] = choice["cross_encoder"].model_dump()
    return JudgeConfig.model_validate(fields)


def mined_blend(mined_dir: Path) -> BlendConfig:
    from embedcurate.pipeline.card.build import blend_from_manifest
    from embedcurate.pipeline.shards import require_valid

    blend = blend_from_manifest(require_valid(mined_dir, "mined"))
    if blend is None:
        raise EmbedCurateError(
            f"{mined_dir}: its manifest records no blend, so the train shards cannot be "
            "re-rendered; mine it with `embedcurate mine` or `embedcurate curate`"
        )
    return blend


def print_report(report: Any, out: Path) -> None:
    details = report.details
    audit = details["audit"]["overall"]
    table = Table(title=f"judge ({details['mode']}, {details['judge']}) -> {out}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rate = audit["false_negative_rate"]
    interval = audit["ci95"]
    rows: list[tuple[str, Any]] = [
        ("rows in", report.num_in),
        ("rows kept", report.num_kept),
        ("rows judged", details["audit"]["rows_judged"]),
        ("negatives judged (as mined)", audit["judged"]),
        ("false-negative rate", "n/a" if rate is None else f"{rate:.1%}"),
        (
            "95% interval (Wilson)",
            "n/a" if interval is None else f"{interval[0]:.1%}-{interval[1]:.1%}",
        ),
        ("unsure", audit["unsure"]),
        ("agreement with the rule", details["audit"]["agreement_with_rule"]),
        *((f"removed: {reason}", n) for reason, n in details["negatives_removed"].items()),
        ("negatives refilled", details["negatives_refilled"]),
        ("seconds", report.elapsed_s),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def judge(
    run_dir: Annotated[
        Path, typer.Argument(help="run folder with mined/ (as mine or curate wrote it)")
    ],
    mode: Annotated[str | None, typer.Option(help="audit, drop or relabel")] = None,
    judge_spec: Annotated[str | None, typer.Option("--judge", help=JUDGE_FORMS)] = None,
    sample: Annotated[
        int | None, typer.Option(help="rows judged (default: 1000 in audit, else all)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample")] = None,
    on_unsure: Annotated[
        str | None, typer.Option(help="drop/relabel: keep or drop unsure negatives")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="LLM judge backend: embedded, openai or vllm")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL")] = None,
    model: Annotated[str | None, typer.Option(help="LLM judge model")] = None,
    max_calls: Annotated[int | None, typer.Option(help="budget of LLM calls")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="LLM response cache folder")] = None,
    near_duplicates: Annotated[
        bool | None,
        typer.Option("--near-duplicates/--no-near-duplicates", help="remove near-copy negatives"),
    ] = None,
    near_threshold: Annotated[float | None, typer.Option(help="MinHash Jaccard threshold")] = None,
) -> None:
    """Judge the mined negatives of a run; re-render its train shards and data card."""
    from pydantic import ValidationError

    mined_dir = run_dir / "mined"
    if not (mined_dir / "manifest.json").is_file():
        fail(f"{mined_dir}: no mined set (run `embedcurate mine ... --out {run_dir}` first)")
    try:
        blend = mined_blend(mined_dir)
        base = blend.judge or JudgeConfig()
        cfg = judge_config(
            base,
            {"mode": mode, "sample": sample, "seed": seed, "on_unsure": on_unsure},
            {"backend": backend, "base_url": base_url, "model": model, "cache_dir": cache_dir},
            near_duplicate_section(base, near_duplicates, near_threshold),
            judge_spec,
            max_calls,
        )
    except ValidationError as exc:
        fail(f"invalid judge options: {exc}")
    except EmbedCurateError as exc:
        fail(str(exc))
    try:
        judge_then_template(run_dir, blend, cfg)
    except EmbedCurateError as exc:
        fail(str(exc))


def judge_then_template(run_dir: Path, blend: BlendConfig, cfg: JudgeConfig) -> None:
    """The registry's judge -> template -> card on the run's mined set."""
    from embedcurate.pipeline.stages import run_stages

    judged_blend = blend.model_copy(update={"judge": cfg})
    _, reports = run_stages(
        judged_blend, run_dir, ["judge", "template", "card"], tables={"mined": [run_dir / "mined"]}
    )
    print_report(reports["judge"], run_dir / "judged")
    print_train_shards(reports["template"].num_kept, run_dir / "train")


def register(app: typer.Typer) -> None:
    app.command()(judge)
