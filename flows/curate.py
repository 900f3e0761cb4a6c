"""The curate flow: it walks the stage registry (`pipeline.stages`) with Prefect tasks.

Stages that read nothing (sources, generate) run concurrently, one task per part; every
other stage runs when its inputs are ready. Each task loads the blend from its path, takes
its stage's section, and returns output folders as strings (tasks pass paths, never
tables). A stage whose section and inputs are unchanged is skipped (`flows.stage_cache`),
so a rerun after a crash resumes at the first unfinished stage. A configuration error is
never retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from embedcurate.flows.artifacts import publish_card
from embedcurate.flows.runners import make_task_runner
from embedcurate.flows.stage_cache import run_once, section_settings
from embedcurate.pipeline.blend import BlendConfig, TrainingConfig, load_blend
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.stages import (
    STAGES,
    StageContext,
    StageSpec,
    Tables,
    get_stage,
    merge_tables,
    written,
)

RETRY_DELAYS = exponential_backoff(backoff_factor=5)
RETRIES = {"generate": 2, "mine": 2}  # calls to servers and GPUs fail transiently more often


def _retry_unless_config_error(_task: Any, _run: Any, state: Any) -> bool:
    """Retry transient failures only: a configuration error fails the same way every time."""
    try:
        state.result()
    except ConfigError:
        return False
    except Exception:
        return True
    return True


def _log_stage(stage: str, ran: bool, outputs: Tables) -> None:
    logger = get_run_logger()
    folders = ", ".join(str(d) for dirs in outputs.values() for d in dirs) or "-"
    if ran:
        logger.info("%s: done -> %s", stage, folders)
    else:
        logger.info("%s: unchanged since the last run, skipped (%s)", stage, folders)


def _part(spec: StageSpec, blend: BlendConfig, part_name: str) -> Any:
    section = spec.section(blend)
    for part in spec.parts(section):
        if spec.part_name(part) == part_name:
            return part
    raise ConfigError(f"stage {spec.name} has no part {part_name!r} in this blend")


@task(name="stage", retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_retry_unless_config_error)
def stage_task(
    stage: str, part_name: str, blend_path: str, inputs: dict[str, list[str]], run_dir: str
) -> dict[str, list[str]]:
    """Run one part of one stage unless it is fresh; returns its output folders by table."""
    spec = get_stage(stage)
    blend = load_blend(blend_path)
    section = _part(spec, blend, part_name)
    run = Path(run_dir)
    stage_inputs = {table: [Path(d) for d in dirs] for table, dirs in inputs.items()}
    outputs = spec.outputs(stage_inputs, run, section)
    context = StageContext(run_dir=run, provenance=blend.portable(), run_id=_flow_run_id())
    ran = run_once(
        run,
        part_name,
        section_settings(section),
        [d for dirs in stage_inputs.values() for d in dirs],
        [d for dirs in outputs.values() for d in dirs],
        lambda: spec.run(stage_inputs, context, section),
        always=not spec.skippable,
    )
    produced = written(outputs)
    _log_stage(part_name, ran, produced)
    return {table: [str(d) for d in dirs] for table, dirs in produced.items()}


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return f"prefect flow run {flow_run.id}" if flow_run.id else None


def _submit(spec: StageSpec, part: Any, blend_path: str, tables: Tables, run_dir: str) -> Any:
    name = spec.part_name(part)
    inputs = {t: [str(d) for d in tables.get(t, [])] for t in spec.reads}
    options = stage_task.with_options(name=spec.name, retries=RETRIES.get(spec.name, 1))
    return options.submit(spec.name, name, blend_path, inputs, run_dir)


def _merge(tables: Tables, spec: StageSpec, result: dict[str, list[str]]) -> None:
    merge_tables(tables, spec, {t: [Path(d) for d in dirs] for t, dirs in result.items()})


@flow(name="curate-stages")
def curate_stages_flow(blend_path: str, out_dir: str) -> dict[str, Any]:
    """The stages proper, walked from the registry; runs on the task runner `curate_flow`
    gives it. Stages that read nothing start together; the rest run in registry order."""
    blend = load_blend(blend_path)
    tables: Tables = {}
    active = [(spec, spec.section(blend)) for spec in STAGES]
    active = [(spec, section) for spec, section in active if section is not None]
    producers = [
        (spec, _submit(spec, part, blend_path, tables, out_dir))
        for spec, section in active
        if not spec.reads
        for part in spec.parts(section)
    ]
    for spec, future in producers:
        _merge(tables, spec, future.result())
    for spec, section in active:
        if spec.reads:
            for part in spec.parts(section):
                _merge(tables, spec, _submit(spec, part, blend_path, tables, out_dir).result())
    (train_dir,) = tables["train"]
    return {
        "run_dir": out_dir,
        "mined_dir": str(tables["mined"][0]),
        "train_dir": str(train_dir),
        "card": str(train_dir / "README.md"),
    }


@flow(name="curate")
def curate_flow(
    blend_path: str,
    out_dir: str,
    runner: str | None = None,
    address: str | None = None,
    train: bool = False,
) -> dict[str, Any]:
    """Curate a blend into validated train shards with a data card (the main job).

    `runner`/`address` override the blend's task runner (thread, dask or ray); `train`
    starts the train flow on the fresh shards when curation finishes, as does a blend with
    a `train_after` section.
    """
    blend = load_blend(blend_path)
    task_runner = make_task_runner(runner or blend.runner, address or blend.dask_address)
    summary: dict[str, Any] = curate_stages_flow.with_options(task_runner=task_runner)(
        str(Path(blend_path).resolve()), str(Path(out_dir).resolve())
    )
    publish_card(blend.name, Path(summary["train_dir"]), Path(summary["run_dir"]))
    if train or blend.train_after is not None:
        from embedcurate.flows.train import train_flow

        settings = blend.train_after or TrainingConfig()
        model_dir = settings.out_dir or Path(summary["run_dir"]) / "model"
        summary["model_dir"] = train_flow(
            shards_dir=summary["train_dir"],
            backbone=settings.backbone,
            out_dir=str(model_dir),
            stage=settings.stage,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            num_hard_negatives=settings.num_hard_negatives,
            max_length=settings.max_length,
        )
    return summary
