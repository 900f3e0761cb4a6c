"""The stage registry: every stage of a curate run, listed once, in run order.

Each entry names the tables a stage reads and writes, the blend section it takes (`None`
when the blend leaves the stage off), and how it runs inside a run folder. The Prefect
flow, the `mine` and `pairs` commands, the card's stage order and the Prefect counts table
all walk this list; nothing else writes the order down.

A stage that reads a table and writes the same table (decontaminate: pairs -> pairs)
replaces it for the stages after it; stages that read nothing (sources, generate) add to
it. Stage modules are imported only when their stage runs, so importing the registry stays
cheap and free of import cycles (the card imports the order from here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from embedcurate.pipeline.blend import (
    BlendConfig,
    DecontaminateStageConfig,
    GenerateStageConfig,
    JudgeConfig,
    MineStageConfig,
    SourcesStageConfig,
    TemplateStageConfig,
)
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.manifest import MANIFEST_NAME
from embedcurate.pipeline.report import StageReport

if TYPE_CHECKING:
    from embedcurate.pipeline.mining.stage import MineInputs

logger = logging.getLogger(__name__)

Tables = dict[str, list[Path]]  # table name ("pairs", "corpus", "mined", "train") -> shard sets


@dataclass(frozen=True)
class StageContext:
    """Where a stage runs and what it records besides its section."""

    run_dir: Path
    provenance: dict[str, Any] | None = None  # the resolved blend, for manifests
    run_id: str | None = None  # the orchestrator's run id, for the card


DeviceNeed = Literal["cpu", "gpu", "auto"]  # auto: a GPU where the cluster has one


@dataclass(frozen=True)
class FanOut:
    """Heavy work a stage can spread over a Dask or Ray runner's workers before it runs.

    The flow calls `check(section, runner)` before any stage starts (settings that cannot be
    spread fail at once), `plan` in one task (the work, as paths), `run_part` in one task per
    path on any worker, then the stage itself, which finds the work done. Under the thread
    runner, and in `run_stages`, the stage does the same work itself, in the same parts.
    `device` says whether a part needs a GPU, so the runner gives each part one.
    """

    task_name: str
    check: Callable[[Any, str], None]
    plan: Callable[[Tables, StageContext, Any], list[str]]
    run_part: Callable[[str, Any], None]
    device: Callable[[Any], DeviceNeed]


@dataclass(frozen=True)
class StageSpec:
    """One stage: its tables, its blend section and how it runs in a run folder."""

    name: str
    purpose: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    section: Callable[[BlendConfig], Any | None]
    run: Callable[[Tables, StageContext, Any], StageReport]
    outputs: Callable[[Tables, Path, Any], Tables]
    parts: Callable[[Any], list[Any]] = field(default=lambda cfg: [cfg])
    skippable: bool = True  # False: always rerun (the card reads every report afresh)
    fan_out: FanOut | None = None  # work a distributed runner spreads over its workers first

    def part_name(self, cfg: Any) -> str:
        """The name a part's skip record is kept under (sources run one part per group)."""
        if isinstance(cfg, SourcesStageConfig):
            return f"{self.name}-" + "+".join(s.name for s in cfg.sources)
        return self.name


# -- how each stage runs inside a run folder -----------------------------------------------


def _sources_outputs(_: Tables, run_dir: Path, cfg: SourcesStageConfig) -> Tables:
    return {
        "pairs": [run_dir / "pairs" / s.name for s in cfg.sources],
        "corpus": [run_dir / "corpus" / s.name for s in cfg.sources],
    }


def _run_sources(_: Tables, ctx: StageContext, cfg: SourcesStageConfig) -> StageReport:
    from embedcurate.pipeline.sources.stage import run_sources

    return run_sources(ctx.run_dir, cfg)


def _source_parts(cfg: SourcesStageConfig) -> list[SourcesStageConfig]:
    """One part per source, unless stage row budgets tie them: `output.max_rows_per_stage`
    shares one budget among a stage's sources by weight, so they must be read together."""
    if cfg.max_rows_per_stage or len(cfg.sources) <= 1:
        return [cfg]
    return [cfg.only([source]) for source in cfg.sources]


def _sources_section(blend: BlendConfig) -> SourcesStageConfig | None:
    return SourcesStageConfig.of(blend) if blend.sources else None


def _synthetic_dir(run_dir: Path) -> Path:
    return run_dir / "pairs" / "synthetic"


def _generate_outputs(_: Tables, run_dir: Path, __: GenerateStageConfig) -> Tables:
    return {"pairs": [_synthetic_dir(run_dir)]}


def _run_generate(_: Tables, ctx: StageContext, cfg: GenerateStageConfig) -> StageReport:
    from embedcurate.pipeline.generation.shard_generate import absorb_parts, remove_plan
    from embedcurate.pipeline.generation.stage import run_generate

    out_dir = _synthetic_dir(ctx.run_dir)
    absorb_parts(cfg.generator, out_dir)  # what the workers generated, when they did
    report = run_generate(out_dir, cfg)
    remove_plan(cfg.generator, out_dir)
    return report


def _plan_generate(_: Tables, ctx: StageContext, cfg: GenerateStageConfig) -> list[str]:
    from embedcurate.pipeline.generation.shard_generate import write_plan

    return write_plan(cfg, _synthetic_dir(ctx.run_dir))


def _generate_part(part: str, cfg: GenerateStageConfig) -> None:
    from embedcurate.pipeline.generation.shard_generate import generate_part

    generate_part(part, cfg)


def _generator_device(cfg: GenerateStageConfig) -> DeviceNeed:
    """vLLM runs on a GPU; llama.cpp (the CPU build) and a server's clients do not."""
    return "gpu" if cfg.generator.backend == "vllm" else "cpu"


def _no_check(_cfg: Any, _runner: str) -> None:
    """Generation spreads under any settings: its responses are always cached."""


def _decontaminate_section(blend: BlendConfig) -> DecontaminateStageConfig | None:
    if blend.decontamination is None or not blend.decontamination.eval_sets:
        return None
    return DecontaminateStageConfig.of(blend)


def _decontaminate_outputs(inputs: Tables, run_dir: Path, _: Any) -> Tables:
    return {"pairs": [run_dir / "clean" / d.name for d in inputs.get("pairs", [])]}


def _run_decontaminate(
    inputs: Tables, ctx: StageContext, cfg: DecontaminateStageConfig
) -> StageReport:
    from embedcurate.pipeline.decontam import run_decontaminate

    return run_decontaminate(
        inputs.get("pairs", []), ctx.run_dir / "clean", cfg, provenance=ctx.provenance
    )


def _mine_inputs(inputs: Tables) -> MineInputs:
    from embedcurate.pipeline.mining.stage import MineInputs

    return MineInputs(
        pairs_dirs=list(inputs.get("pairs", [])),
        corpus_dirs={d.name: d for d in inputs.get("corpus", [])},
    )


def _run_mine(inputs: Tables, ctx: StageContext, cfg: MineStageConfig) -> StageReport:
    from embedcurate.pipeline.mining.shard_encode import remove_plan
    from embedcurate.pipeline.mining.stage import run_mine

    mined_dir = ctx.run_dir / "mined"
    report = run_mine(_mine_inputs(inputs), mined_dir, cfg, provenance=ctx.provenance)
    remove_plan(cfg, mined_dir)  # parts a distributed runner encoded are in the cache now
    return report


def _check_mine_fan_out(cfg: MineStageConfig, runner: str) -> None:
    if not cfg.teacher.cache:
        raise ConfigError(
            f"teacher.cache: false does not work with --runner {runner}: the workers encode "
            "the corpus into the shared embedding cache and the mine stage reads it from "
            "there; set teacher.cache: true (and teacher.cache_dir to a folder every worker "
            "reaches), or use --runner thread"
        )


def _plan_mine(inputs: Tables, ctx: StageContext, cfg: MineStageConfig) -> list[str]:
    from embedcurate.pipeline.mining.shard_encode import write_plan

    return write_plan(_mine_inputs(inputs), cfg, ctx.run_dir / "mined")


def _encode_mine_part(part: str, cfg: MineStageConfig) -> None:
    from embedcurate.pipeline.mining.shard_encode import encode_part

    encode_part(part, cfg)


def _teacher_device(cfg: MineStageConfig) -> DeviceNeed:
    device = cfg.teacher.device
    if device == "auto":
        return "auto"
    return "gpu" if device.startswith("cuda") else "cpu"


def _run_judge(inputs: Tables, ctx: StageContext, cfg: JudgeConfig) -> StageReport:
    from embedcurate.pipeline.judge.stage import run_judge

    (mined_dir,) = inputs["mined"]
    return run_judge(mined_dir, ctx.run_dir / "judged", cfg)


def _run_template(inputs: Tables, ctx: StageContext, cfg: TemplateStageConfig) -> StageReport:
    from embedcurate.pipeline.train_rows import run_template

    (mined_dir,) = inputs["mined"]
    return run_template(mined_dir, ctx.run_dir / "train", cfg, provenance=ctx.provenance)


def _run_card(inputs: Tables, ctx: StageContext, blend: BlendConfig) -> StageReport:
    from embedcurate.pipeline.card.build import run_card

    (train_dir,) = inputs["train"]
    return run_card(train_dir, ctx.run_dir, blend, run_id=ctx.run_id)


def _fixed(table: str, folder: str) -> Callable[[Tables, Path, Any], Tables]:
    return lambda _inputs, run_dir, _cfg: {table: [run_dir / folder]}


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="sources",
        purpose="public and local datasets -> pairs (and the corpus they bring)",
        reads=(),
        writes=("pairs", "corpus"),
        section=_sources_section,
        run=_run_sources,
        outputs=_sources_outputs,
        parts=_source_parts,
    ),
    StageSpec(
        name="generate",
        purpose="synthetic pairs by an LLM, the E5-Mistral way",
        reads=(),
        writes=("pairs",),
        section=lambda blend: GenerateStageConfig.of(blend) if blend.generator else None,
        run=_run_generate,
        outputs=_generate_outputs,
        fan_out=FanOut(
            task_name="requests",
            check=_no_check,
            plan=_plan_generate,
            run_part=_generate_part,
            device=_generator_device,
        ),
    ),
    StageSpec(
        name="decontaminate",
        purpose="drop pairs that overlap the evaluation sets",
        reads=("pairs",),
        writes=("pairs",),
        section=_decontaminate_section,
        run=_run_decontaminate,
        outputs=_decontaminate_outputs,
    ),
    StageSpec(
        name="mine",
        purpose="hard negatives by a teacher on FAISS, positive-aware -> mined",
        reads=("pairs", "corpus"),
        writes=("mined",),
        section=MineStageConfig.of,
        run=_run_mine,
        outputs=_fixed("mined", "mined"),
        fan_out=FanOut(
            task_name="encode",
            check=_check_mine_fan_out,
            plan=_plan_mine,
            run_part=_encode_mine_part,
            device=_teacher_device,
        ),
    ),
    StageSpec(
        name="judge",
        purpose="audit or fix false negatives; remove near-duplicate negatives",
        reads=("mined",),
        writes=("mined",),
        section=lambda blend: blend.judge,
        run=_run_judge,
        outputs=_fixed("mined", "judged"),
    ),
    StageSpec(
        name="template",
        purpose="instruction templates and k negatives -> train shards",
        reads=("mined",),
        writes=("train",),
        section=TemplateStageConfig.of,
        run=_run_template,
        outputs=_fixed("train", "train"),
    ),
    StageSpec(
        name="card",
        purpose="the data card beside the train shards",
        reads=("train",),
        writes=(),
        section=lambda blend: blend,
        run=_run_card,
        outputs=lambda _inputs, _run_dir, _cfg: {},
        skippable=False,
    ),
)
STAGE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STAGES)


def get_stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def stage_rank(name: str) -> int:
    """A stage's position in run order; unknown names sort last."""
    return STAGE_NAMES.index(name) if name in STAGE_NAMES else len(STAGE_NAMES)


def stage_inputs(spec: StageSpec, tables: Mapping[str, Sequence[Path]]) -> Tables:
    return {table: list(tables.get(table, [])) for table in spec.reads}


def written(outputs: Tables) -> Tables:
    """The planned outputs that a stage actually wrote (a source without documents writes
    no corpus; a folder without a manifest is an unfinished write)."""
    return {
        table: [d for d in dirs if (d / MANIFEST_NAME).is_file()] for table, dirs in outputs.items()
    }


def merge_tables(tables: Tables, spec: StageSpec, produced: Tables) -> None:
    """Add a stage's outputs to the run's tables: a stage that reads a table it also writes
    replaces it; a stage that reads nothing adds to it."""
    for table, dirs in produced.items():
        if table in spec.reads:
            tables[table] = list(dirs)
        else:
            tables[table] = [*tables.get(table, []), *dirs]


def local_paths(section: Any) -> list[Path]:
    """Local files a section points at (source files, eval sets), for skip keys: data edited
    in place must rerun its stage. Cache folders are not inputs and are left out."""
    from embedcurate.pipeline.blend import MACHINE_LOCAL_KEYS

    found: list[Path] = []

    def walk(value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                if name not in MACHINE_LOCAL_KEYS:
                    walk(getattr(value, name))
        elif isinstance(value, Path):
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(section)
    return found


def run_stages(
    blend: BlendConfig,
    run_dir: Path,
    names: Iterable[str] | None = None,
    *,
    tables: Tables | None = None,
    run_id: str | None = None,
) -> tuple[Tables, dict[str, StageReport]]:
    """Run the named stages (default: every stage the blend turns on) in registry order, in
    this process; returns the run's tables and each stage's report.

    The Prefect flow walks the same list with tasks, skip keys and concurrency (and splits a
    stage into its parts); this is the walk for commands that need none of that."""
    wanted = set(STAGE_NAMES if names is None else names)
    unknown = wanted - set(STAGE_NAMES)
    if unknown:
        raise KeyError(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGE_NAMES)}")
    run_dir = Path(run_dir)
    tables = {k: list(v) for k, v in (tables or {}).items()}
    context = StageContext(run_dir=run_dir, provenance=blend.portable(), run_id=run_id)
    reports: dict[str, StageReport] = {}
    for spec in STAGES:
        section = spec.section(blend) if spec.name in wanted else None
        if section is None:
            continue
        inputs = stage_inputs(spec, tables)
        logger.info("stage %s: %s", spec.name, spec.purpose)
        reports[spec.name] = spec.run(inputs, context, section)
        merge_tables(tables, spec, written(spec.outputs(inputs, run_dir, section)))
    return tables, reports
