"""The curate flow: it walks the stage registry (`pipeline.stages`) with Prefect tasks.

Stages that read nothing (sources, generate) run concurrently, one task per part; every
other stage runs when its inputs are ready. Each task loads the blend from its path, takes
its stage's section, and returns output folders as strings (tasks pass paths, never
tables). A stage whose section and inputs are unchanged is skipped (`flows.stage_cache`),
so a rerun after a crash resumes at the first unfinished stage. A configuration error is
never retried.

Under a Dask or Ray runner, a stage with a `FanOut` (mine: encoding the corpus) first has
its heavy work planned in one task and spread as one task per piece over the workers (where
the work wants a GPU, every one of these tasks and the stage's own take one); the stage task
then finds that work done. Under the thread
runner the stage does the same work itself, in the same pieces, so the output is the same.
Generation fans out too (its requests); the other stages that read nothing start while it
does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.tasks import exponential_backoff

from embedcurate.flows.artifacts import publish_card
from embedcurate.flows.runners import (
    cluster_gpus,
    gpu_request,
    make_task_runner,
    missing_gpus_hint,
    runner_kind,
)
from embedcurate.flows.stage_cache import run_once, section_settings, stage_is_fresh
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


def with_retries(flow_task: Any, name: str, retries: int) -> Any:
    """The task under `name`, retried `retries` times with growing waits (5 s, 10 s, ...).

    The delays are computed here: Prefect turns a callable `retry_delay_seconds` into a list
    when the task is decorated, for the decorator's retries (none), and `with_options` keeps
    that empty list, so a retry would otherwise start at once.
    """
    return flow_task.with_options(
        name=name, retries=retries, retry_delay_seconds=RETRY_DELAYS(retries)
    )


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


@dataclass(frozen=True)
class StagePart:
    """One part of one stage as a task on any worker sees it: loaded from the blend's path."""

    spec: StageSpec
    name: str
    section: Any
    inputs: Tables
    context: StageContext

    @classmethod
    def load(
        cls, stage: str, part_name: str, blend_path: str, inputs: dict[str, list[str]], run_dir: str
    ) -> StagePart:
        spec = get_stage(stage)
        blend = load_blend(blend_path)
        context = StageContext(
            run_dir=Path(run_dir), provenance=blend.portable(), run_id=_flow_run_id()
        )
        return cls(
            spec=spec,
            name=part_name,
            section=_part(spec, blend, part_name),
            inputs={table: [Path(d) for d in dirs] for table, dirs in inputs.items()},
            context=context,
        )

    @property
    def input_dirs(self) -> list[Path]:
        return [d for dirs in self.inputs.values() for d in dirs]

    def is_fresh(self) -> bool:
        """Whether the stage task would skip this part (`stage_cache.run_once`)."""
        return self.spec.skippable and stage_is_fresh(
            self.context.run_dir, self.name, section_settings(self.section), self.input_dirs
        )


@task(name="stage", retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_retry_unless_config_error)
def stage_task(
    stage: str, part_name: str, blend_path: str, inputs: dict[str, list[str]], run_dir: str
) -> dict[str, list[str]]:
    """Run one part of one stage unless it is fresh; returns its output folders by table."""
    part = StagePart.load(stage, part_name, blend_path, inputs, run_dir)
    spec, section, context = part.spec, part.section, part.context
    outputs = spec.outputs(part.inputs, context.run_dir, section)
    ran = run_once(
        context.run_dir,
        part_name,
        section_settings(section),
        part.input_dirs,
        [d for dirs in outputs.values() for d in dirs],
        lambda: spec.run(part.inputs, context, section),
        always=not spec.skippable,
    )
    produced = written(outputs)
    _log_stage(part_name, ran, produced)
    return {table: [str(d) for d in dirs] for table, dirs in produced.items()}


@task(name="plan", retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_retry_unless_config_error)
def plan_task(
    stage: str, part_name: str, blend_path: str, inputs: dict[str, list[str]], run_dir: str
) -> list[str]:
    """The work a stage spreads over the workers before it runs (`StageSpec.fan_out`), as
    paths; none when the stage is fresh and will be skipped."""
    part = StagePart.load(stage, part_name, blend_path, inputs, run_dir)
    fan_out = part.spec.fan_out
    assert fan_out is not None
    if part.is_fresh():
        get_run_logger().info("%s: unchanged since the last run, nothing to plan", part_name)
        return []
    work = fan_out.plan(part.inputs, part.context, part.section)
    get_run_logger().info(
        "%s: %d %s task(s) for the workers", part_name, len(work), fan_out.task_name
    )
    return work


@task(name="part", retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_retry_unless_config_error)
def part_task(stage: str, part_name: str, blend_path: str, work: str) -> str:
    """One piece of the work `plan_task` listed, on whichever worker the runner picks."""
    spec = get_stage(stage)
    assert spec.fan_out is not None
    spec.fan_out.run_part(work, _part(spec, load_blend(blend_path), part_name))
    return work


def check_fan_out(blend: BlendConfig, runner: str) -> None:
    """Refuse, before a cluster starts or a stage runs, settings a stage cannot spread over
    the workers of a Dask or Ray runner (`FanOut.check`)."""
    if runner == "thread":
        return
    for spec in STAGES:
        if spec.fan_out is not None and (section := spec.section(blend)) is not None:
            spec.fan_out.check(section, runner)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return f"prefect flow run {flow_run.id}" if flow_run.id else None


def _input_paths(spec: StageSpec, tables: Tables) -> dict[str, list[str]]:
    return {t: [str(d) for d in tables.get(t, [])] for t in spec.reads}


def _submit(spec: StageSpec, part: Any, blend_path: str, tables: Tables, run_dir: str) -> Any:
    name = spec.part_name(part)
    options = with_retries(stage_task, spec.name, RETRIES.get(spec.name, 1))
    return options.submit(spec.name, name, blend_path, _input_paths(spec, tables), run_dir)


def _gpus_if(gpu: bool) -> contextlib.AbstractContextManager[None]:
    """Tasks submitted inside take a GPU each when `gpu` (`runners.gpu_request`)."""
    return gpu_request(_task_runner()) if gpu else contextlib.nullcontext()


def _fan_out(spec: StageSpec, part: Any, blend_path: str, tables: Tables, run_dir: str) -> None:
    """Plan the stage's heavy work, run it as one task per piece on the workers, and return
    when every piece is done; a piece that fails after its retries fails the flow before the
    stage starts."""
    assert spec.fan_out is not None
    name = spec.part_name(part)
    retries = RETRIES.get(spec.name, 1)
    planner = with_retries(plan_task, f"{spec.name}-plan", retries)
    pieces = planner.submit(
        spec.name, name, blend_path, _input_paths(spec, tables), run_dir
    ).result()  # no future kept: Dask would redo the plan if the worker holding it died
    worker = with_retries(part_task, f"{spec.name}-{spec.fan_out.task_name}", retries)
    futures = [worker.submit(spec.name, name, blend_path, piece) for piece in pieces]
    wait(futures)
    for future in futures:
        future.result()  # raises the first failure


def _task_runner() -> Any:
    context = FlowRunContext.get()
    assert context is not None, "called outside a flow run"
    return context.task_runner


def _fan_out_gpus(active: list[tuple[StageSpec, Any]]) -> dict[str, bool]:
    """For each stage that spreads work over this flow's runner: whether its tasks take a GPU.

    Empty under the thread runner (the stages do the work themselves). A stage whose work
    needs a GPU on a cluster that declares none fails here, before any stage starts, rather
    than waiting forever for a worker that will never come.
    """
    task_runner = _task_runner()
    if runner_kind(task_runner) == "thread":
        return {}
    gpus: dict[str, bool] = {}
    for spec, section in active:
        if spec.fan_out is None:
            continue
        need = spec.fan_out.device(section)
        available = cluster_gpus(task_runner) if need != "cpu" else 0
        if need == "gpu" and not available:
            raise ConfigError(
                f"{spec.name}: the {spec.fan_out.task_name} tasks need a GPU and "
                f"{missing_gpus_hint(task_runner)}"
            )
        gpus[spec.name] = need == "gpu" or (need == "auto" and available > 0)
    return gpus


def _start(
    spec: StageSpec,
    part: Any,
    blend_path: str,
    tables: Tables,
    run_dir: str,
    fan_out_gpus: dict[str, bool],
) -> Any:
    """Submit one part of a stage; a stage that spreads work over the workers has it done
    first (`_fan_out`, which returns when every piece is done)."""
    # the stage's own task takes a GPU as its pieces do: on Ray a task without one sees
    # none, and the teacher must resolve alike (dtype) for all of them
    with _gpus_if(fan_out_gpus.get(spec.name, False)):
        if spec.name in fan_out_gpus:
            _fan_out(spec, part, blend_path, tables, run_dir)
        return _submit(spec, part, blend_path, tables, run_dir)


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
    fan_out_gpus = _fan_out_gpus(active)
    producers = [
        (spec, part) for spec, section in active if not spec.reads for part in spec.parts(section)
    ]
    # producers whose work is spread over the workers start last, so the others run meanwhile
    started = {
        index: _start(spec, part, blend_path, tables, out_dir, fan_out_gpus)
        for index, (spec, part) in sorted(
            enumerate(producers), key=lambda item: item[1][0].name in fan_out_gpus
        )
    }
    for index, (spec, _) in enumerate(producers):  # merged in registry order, as threads do
        _merge(tables, spec, started[index].result())
    for spec, section in active:
        if spec.reads:
            for part in spec.parts(section):
                future = _start(spec, part, blend_path, tables, out_dir, fan_out_gpus)
                _merge(tables, spec, future.result())
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
    kind = runner or blend.runner
    check_fan_out(blend, kind)
    task_runner = make_task_runner(kind, address or blend.dask_address)
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
