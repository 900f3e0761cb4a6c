"""The curate job's stages in order, and which of them this build implements.

`embedcurate curate` walks this list: it runs the stages that exist and names the ones that
do not, rather than pretending. A stage is implemented when its module defines its
`run_<stage>` function.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipeline.blend import BlendConfig


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    function: str
    purpose: str

    def is_implemented(self) -> bool:
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and self.module.startswith(exc.name):
                return False
            raise
        return callable(getattr(module, self.function, None))


CURATE_STAGES: tuple[StageSpec, ...] = (
    StageSpec("sources", "pipeline.sources", "run_sources", "public and local data -> pairs"),
    StageSpec("generate", "pipeline.generation.stage", "run_generate", "synthetic pairs by an LLM"),
    StageSpec("decontaminate", "pipeline.decontam", "run_decontaminate", "drop eval overlaps"),
    StageSpec("mine", "pipeline.mine", "run_mine", "teacher + FAISS hard negatives -> mined"),
    StageSpec("template", "pipeline.templates", "run_template", "instructions -> train shards"),
    StageSpec("card", "pipeline.card", "run_card", "data card beside the train shards"),
)


def stage_status() -> list[tuple[StageSpec, bool]]:
    return [(spec, spec.is_implemented()) for spec in CURATE_STAGES]


def missing_stages(blend: BlendConfig) -> list[str]:
    """Stages this blend needs that this build does not implement."""
    optional = {
        "generate": blend.generator is not None,
        "decontaminate": bool(blend.decontamination and blend.decontamination.eval_sets),
    }
    return [
        spec.name
        for spec, implemented in stage_status()
        if not implemented and optional.get(spec.name, True)
    ]
