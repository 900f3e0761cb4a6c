"""The curate flow: sources and generation -> decontamination -> mining -> train shards -> card.

Each task loads the blend from its path, runs one `pipeline` stage, and returns output
folders as strings. Stages whose inputs and settings are unchanged are skipped
(`flows.stage_cache`), so a rerun after a crash resumes at the first unfinished stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from embedcurate.flows.artifacts import publish_card
from embedcurate.flows.runners import make_task_runner
from embedcurate.flows.stage_cache import files_fingerprint, run_once
from embedcurate.pipeline.blend import BlendConfig, SourceConfig, TrainingConfig, load_blend

RETRY_DELAYS = exponential_backoff(backoff_factor=5)


def _log_stage(stage: str, ran: bool, out: Path) -> None:
    logger = get_run_logger()
    if not ran:
        logger.info("%s: unchanged since the last run, skipped (%s)", stage, out)
        return
    report = out / "report.json"
    logger.info("%s: done -> %s%s", stage, out, "" if report.exists() else " (no report)")


def _source_settings(blend: BlendConfig, source: SourceConfig) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "source": source.model_dump(mode="json"),
        "seed": blend.seed,
        "files": files_fingerprint(source.path),
    }
    if source.task_type in ("classification", "clustering"):
        # these sources sample other-label negatives in proportion to num_negatives
        settings["num_negatives"] = blend.mining.num_negatives
    return settings


def source_groups(blend: BlendConfig) -> list[list[str]]:
    """Sources that can run as separate tasks: each alone, unless stage budgets tie them.

    `output.max_rows_per_stage` shares one row budget among a stage's sources by weight, so
    then every source must be read in the same call.
    """
    names = [s.name for s in blend.sources]
    if blend.output.max_rows_per_stage:
        return [names] if names else []
    return [[name] for name in names]


@task(name="sources", retries=1, retry_delay_seconds=RETRY_DELAYS)
def sources_task(blend_path: str, source_names: list[str], run_dir: str) -> dict[str, list[str]]:
    """Read a group of sources; returns {source: [pairs dir, corpus dir if any]}."""
    from embedcurate.pipeline.sources.stage import run_sources

    blend = load_blend(blend_path)
    sources = [s for s in blend.sources if s.name in source_names]
    run = Path(run_dir)
    outputs = {s.name: [run / "pairs" / s.name, run / "corpus" / s.name] for s in sources}
    settings = {
        "sources": [_source_settings(blend, s) for s in sources],
        "output": blend.output.model_dump(mode="json"),
    }
    ran = run_once(
        run,
        "sources-" + "+".join(source_names),
        settings,
        [],
        [d for dirs in outputs.values() for d in dirs],
        lambda: run_sources(sources, run, blend),
    )
    _log_stage(f"sources[{', '.join(source_names)}]", ran, run / "pairs")
    return {
        name: [str(d) for d in dirs if (d / "manifest.json").exists()]
        for name, dirs in outputs.items()
    }


@task(name="generate", retries=2, retry_delay_seconds=RETRY_DELAYS)
def generate_task(blend_path: str, run_dir: str) -> str:
    from embedcurate.pipeline.generation.stage import run_generate

    blend = load_blend(blend_path)
    assert blend.generator is not None
    run, out = Path(run_dir), Path(run_dir) / "pairs" / "synthetic"
    settings = {
        "generator": blend.generator.model_dump(mode="json"),
        "teacher": blend.teacher.model_dump(mode="json"),
        "seed": blend.seed,
    }
    ran = run_once(
        run, "generate", settings, [], [out], lambda: run_generate(blend.generator, out, blend)
    )
    _log_stage("generate", ran, out)
    return str(out)


@task(name="decontaminate", retries=1, retry_delay_seconds=RETRY_DELAYS)
def decontaminate_task(blend_path: str, pairs_dirs: list[str], run_dir: str) -> list[str]:
    from embedcurate.pipeline.decontam import run_decontaminate

    blend = load_blend(blend_path)
    assert blend.decontamination is not None
    run, out = Path(run_dir), Path(run_dir) / "clean"
    inputs = [Path(d) for d in pairs_dirs]
    outputs = [out / d.name for d in inputs]
    settings = {
        "decontamination": blend.decontamination.model_dump(mode="json"),
        "files": [files_fingerprint(e.path) for e in blend.decontamination.eval_sets],
    }
    ran = run_once(
        run,
        "decontaminate",
        settings,
        inputs,
        outputs,
        lambda: run_decontaminate(inputs, out, blend),
    )
    _log_stage("decontaminate", ran, out)
    return [str(o) for o in outputs]


@task(name="mine", retries=2, retry_delay_seconds=RETRY_DELAYS)
def mine_task(
    blend_path: str, pairs_dirs: list[str], corpus_dirs: dict[str, str], run_dir: str
) -> str:
    from embedcurate.pipeline.mining.stage import MineInputs, run_mine

    blend = load_blend(blend_path)
    run, out = Path(run_dir), Path(run_dir) / "mined"
    inputs = MineInputs(
        pairs_dirs=[Path(d) for d in pairs_dirs],
        corpus_dirs={name: Path(d) for name, d in corpus_dirs.items()},
    )
    settings = {
        "teacher": blend.teacher.model_dump(mode="json"),
        "mining": blend.mining.model_dump(mode="json"),
        "seed": blend.seed,
    }
    input_dirs = [*inputs.pairs_dirs, *inputs.corpus_dirs.values()]
    ran = run_once(run, "mine", settings, input_dirs, [out], lambda: run_mine(inputs, out, blend))
    _log_stage("mine", ran, out)
    return str(out)


@task(name="template", retries=1, retry_delay_seconds=RETRY_DELAYS)
def template_task(blend_path: str, mined_dir: str, run_dir: str) -> str:
    from embedcurate.pipeline.train_rows import run_template

    blend = load_blend(blend_path)
    run, out = Path(run_dir), Path(run_dir) / "train"
    settings = {
        "num_negatives": blend.mining.num_negatives,
        "output": blend.output.model_dump(mode="json"),
    }
    ran = run_once(
        run,
        "template",
        settings,
        [Path(mined_dir)],
        [out],
        lambda: run_template(Path(mined_dir), out, blend),
    )
    _log_stage("template", ran, out)
    return str(out)


@task(name="card", retries=1, retry_delay_seconds=RETRY_DELAYS)
def card_task(blend_path: str, train_dir: str, run_dir: str) -> str:
    """The card is cheap and reads every report, so it is always rendered afresh."""
    from prefect.runtime import flow_run

    from embedcurate.pipeline.card.build import run_card

    blend = load_blend(blend_path)
    run_card(Path(train_dir), Path(run_dir), blend, run_id=f"prefect flow run {flow_run.id}")
    _log_stage("card", True, Path(train_dir))
    return str(Path(train_dir) / "README.md")


def _gather_pairs(
    blend: BlendConfig, blend_path: str, run_dir: str
) -> tuple[list[str], dict[str, str]]:
    """Run the source groups and generation concurrently; collect their outputs."""
    source_futures = [
        sources_task.submit(blend_path, group, run_dir) for group in source_groups(blend)
    ]
    generate_future = generate_task.submit(blend_path, run_dir) if blend.generator else None
    pairs_dirs: list[str] = []
    corpus_dirs: dict[str, str] = {}
    for future in source_futures:
        for name, outs in future.result().items():
            for out in outs:
                if Path(out).parent.name == "corpus":
                    corpus_dirs[name] = out
                else:
                    pairs_dirs.append(out)
    if generate_future is not None:
        pairs_dirs.append(generate_future.result())
    return pairs_dirs, corpus_dirs


@flow(name="curate-stages")
def curate_stages_flow(blend_path: str, out_dir: str) -> dict[str, str]:
    """The stages proper; runs on whichever task runner `curate_flow` gives it."""
    blend = load_blend(blend_path)
    pairs_dirs, corpus_dirs = _gather_pairs(blend, blend_path, out_dir)
    if blend.decontamination and blend.decontamination.eval_sets:
        pairs_dirs = decontaminate_task(blend_path, pairs_dirs, out_dir)
    mined_dir = mine_task(blend_path, pairs_dirs, corpus_dirs, out_dir)
    train_dir = template_task(blend_path, mined_dir, out_dir)
    card_path = card_task(blend_path, train_dir, out_dir)
    return {"run_dir": out_dir, "mined_dir": mined_dir, "train_dir": train_dir, "card": card_path}


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
        )
    return summary
