"""Generation requests spread over workers: the plan as part files, one task per part.

Under a Dask or Ray runner the curate flow (`flows.curate`, through the generate stage's
`FanOut` in `pipeline.stages`) plans in one task (`write_plan`): it brainstorms the task
definitions of every synthetic type (a few calls, into the shared response cache) and
writes the generate step as parts of whole tasks. Each part runs in a task of its own on any
worker (`generate_part`), with the worker's own backend (one llama.cpp model or one vLLM
engine per process, or its own connections to the server), and keeps its responses in a
cache file of its own beside the part. The stage then absorbs the parts' files into the
shared cache and runs as under the thread runner: every request is answered from the cache,
the model is never loaded, and the rows are those the thread runner writes (the requests are
the same, whichever process asks them: draws and seeds follow the task's index only).

Every response a part receives is committed as it arrives, so a worker that dies loses only
the calls in flight; the retried part finds the rest in its file. Parts look responses up in
the shared cache first, so work an earlier run paid for is never asked again.

Plans live in the response cache's folder (`<cache_dir>/generation/plans/...`, written once,
`pipeline.fan_out`), and tasks pass their path relative to that folder: a worker that finds no
part file sees another folder, and says so.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from embedcurate.pipeline.blend import GenerateStageConfig, GeneratorConfig
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.fan_out import PLANS_DIR, PlanWriter, plan_name
from embedcurate.pipeline.generation.backends import make_backend
from embedcurate.pipeline.generation.cache import (
    CachingGenerator,
    ResponseCache,
    generator_folder,
    response_cache,
)
from embedcurate.pipeline.generation.prompts import load_template
from embedcurate.pipeline.generation.stage import (
    brainstorm_all,
    generate_candidates,
    generation_plan,
    load_templates,
)
from embedcurate.pipeline.generation.types import GenerationResult

logger = logging.getLogger(__name__)

TARGET_PARTS = 16  # enough to keep a few workers busy to the end, few enough to load a model
PART_SUFFIX = ".json"
RESPONSES_SUFFIX = ".sqlite"


@dataclass(frozen=True)
class GeneratePart:
    """Whole tasks of one synthetic type: `tasks[i]` is task number `first_task_index + i`."""

    synthetic_type: str
    first_task_index: int
    tasks: list[str]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> GeneratePart:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class ReadThrough:
    """Responses looked up in the shared cache first; new ones kept in the part's own file."""

    shared: ResponseCache
    part: ResponseCache

    def get(self, key: str) -> GenerationResult | None:
        found = self.shared.get(key)
        return found if found is not None else self.part.get(key)

    def put(self, key: str, model_identity: str, result: GenerationResult) -> None:
        self.part.put(key, model_identity, result)


def plans_folder(cfg: GeneratorConfig, out_dir: Path) -> Path:
    return generator_folder(cfg) / PLANS_DIR / plan_name(out_dir)


def split_tasks(synthetic_type: str, tasks: list[str], tasks_per_part: int) -> list[GeneratePart]:
    return [
        GeneratePart(synthetic_type, start, tasks[start : start + tasks_per_part])
        for start in range(0, len(tasks), tasks_per_part)
    ]


def write_plan(stage_cfg: GenerateStageConfig, out_dir: Path) -> list[str]:
    """Brainstorm every synthetic type, then write the generate step as parts of whole tasks
    (about `TARGET_PARTS` in all); returns each part's path relative to the response cache's
    folder, in order."""
    cfg = stage_cfg.generator
    cache = response_cache(cfg)
    backend = make_backend(cfg)
    try:
        generator = CachingGenerator(backend, cache)
        task_lists = brainstorm_all(generator, load_templates(cfg), generation_plan(stage_cfg))
    finally:
        backend.close()
        cache.close()
    total = sum(len(tasks) for tasks in task_lists.values())
    tasks_per_part = max(1, math.ceil(total / TARGET_PARTS))
    writer = PlanWriter(plans_folder(cfg, out_dir))
    for synthetic_type, tasks in task_lists.items():
        for part in split_tasks(synthetic_type, tasks, tasks_per_part):
            text = part.to_json()
            writer.add(
                partial(Path.write_text, data=text, encoding="utf-8"), text.encode(), PART_SUFFIX
            )
    parts = writer.commit()
    logger.info(
        "generate plan: %d task(s) x %d example(s) in %d part(s)",
        total,
        cfg.examples_per_task,
        len(parts),
    )
    return [path.relative_to(generator_folder(cfg)).as_posix() for path in parts]


def generate_part(part: str, stage_cfg: GenerateStageConfig) -> int:
    """Ask one part's requests with this process's backend; returns how many calls it made
    (none for requests the shared cache or the part's own file already answer)."""
    cfg = stage_cfg.generator
    path = generator_folder(cfg) / part
    if not path.is_file():
        raise ConfigError(
            f"{path}: this worker does not see the generation plan written in the response "
            f"cache folder {generator_folder(cfg)}; every worker must reach the same folder: "
            "set generator.cache_dir to a shared folder"
        )
    work = GeneratePart.read(path)
    template = load_template("generate", work.synthetic_type)
    store = ReadThrough(
        response_cache(cfg), ResponseCache.part_file(path.with_suffix(RESPONSES_SUFFIX))
    )
    backend = make_backend(cfg)
    generator = CachingGenerator(backend, store)
    try:
        generate_candidates(
            generator,
            template,
            generation_plan(stage_cfg),
            work.synthetic_type,
            work.tasks,
            first_task_index=work.first_task_index,
        )
    finally:
        backend.close()
        store.shared.close()
        store.part.close()
    calls = generator.stats.num_backend_calls
    logger.info("%s: %d of %d request(s) called", part, calls, generator.stats.num_requests)
    return calls


def absorb_parts(cfg: GeneratorConfig, out_dir: Path) -> int:
    """Copy every part's responses into the shared cache before the stage runs; returns how
    many it copied (none under the thread runner, which writes no plan)."""
    folder = plans_folder(cfg, out_dir)
    files = sorted(folder.glob(f"*/*{RESPONSES_SUFFIX}")) if folder.is_dir() else []
    if not files:
        return 0
    cache = response_cache(cfg)
    try:
        copied = sum(cache.absorb(path) for path in files)
    finally:
        cache.close()
    logger.info("generate: %d response(s) from %d part(s) of the workers", copied, len(files))
    return copied


def remove_plan(cfg: GeneratorConfig, out_dir: Path) -> None:
    """Delete a generate output's plans once the stage has written its shards."""
    shutil.rmtree(plans_folder(cfg, out_dir), ignore_errors=True)
