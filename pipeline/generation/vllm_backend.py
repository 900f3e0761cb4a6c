"""GPU batch generation with vLLM's in-process offline engine and guided JSON.

vLLM schedules the whole batch itself (continuous batching, prefix caching), so requests go
in one call per prompt form. Guided decoding uses `StructuredOutputsParams` (vLLM >= 0.11)
or, on older releases, `GuidedDecodingParams`.

This is the only module that imports `vllm`, and it does so lazily. No test runs it: the
project's machines have no GPU; its interface is the one the tested backends implement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    ResultCallback,
)

logger = logging.getLogger(__name__)


def _guided_options(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM < 0.11
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: GeneratorConfig) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise GenerationError(
                "the vllm backend needs vLLM on a GPU machine: pip install 'embedcurate[gpu]'"
            ) from exc
        self.cfg = cfg
        self.model_id = cfg.model
        self.cache_identity = f"vllm:{cfg.model}"
        self._engine = LLM
        self._llm: Any = None

    def _loaded(self) -> Any:
        """The engine, started on the first request: a run whose answers are all cached (a
        rerun, or the stage after workers generated its parts) never takes the GPU."""
        if self._llm is None:
            self._llm = self._engine(model=self.cfg.model, seed=0)
        return self._llm

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams

        options = request.sampling.engine_options("repetition_penalty")
        if request.json_schema is not None:
            options.update(_guided_options(request.json_schema))
        return SamplingParams(**options)

    def generate(self, requests: Sequence[GenerationRequest], on_result: ResultCallback) -> None:
        for form in ("completion", "chat"):
            indices = [i for i, r in enumerate(requests) if r.prompt.form == form]
            if not indices:
                continue
            params = [self._sampling_params(requests[i]) for i in indices]
            try:
                if form == "chat":
                    conversations = [
                        [
                            {"role": m.role, "content": m.content}
                            for m in requests[i].prompt.messages
                        ]
                        for i in indices
                    ]
                    outputs = self._loaded().chat(conversations, sampling_params=params)
                else:
                    prompts = [requests[i].prompt.text for i in indices]
                    outputs = self._loaded().generate(prompts, sampling_params=params)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"vllm backend ({self.model_id}): {exc}") from exc
            for index, output in zip(indices, outputs, strict=True):
                completion = output.outputs[0]
                on_result(
                    index,
                    GenerationResult(
                        text=completion.text,
                        finish_reason=completion.finish_reason,
                        prompt_tokens=len(output.prompt_token_ids or ()),
                        completion_tokens=len(completion.token_ids),
                    ),
                )

    def close(self) -> None:
        """Free the GPU for the stages after generation (mining encodes on it)."""
        if self._llm is None:
            return
        shutdown = getattr(self._llm, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._llm = None
