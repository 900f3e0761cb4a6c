"""Pick a generator backend from the blend's `generator:` section, and the per-backend
defaults (prompt form, guided decoding, repetition penalty) that follow from it.

The interface the backends implement lives in `types`, so the backend modules import it
without importing this factory (which imports them, lazily).
"""

from __future__ import annotations

from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.generation.prompts import PromptForm
from embedcurate.pipeline.generation.types import GenerationError, GeneratorBackend, ModelKind


def model_kind(cfg: GeneratorConfig) -> ModelKind:
    """Which prompt form suits the model: the packaged Gemma is a base model (no chat template)."""
    if cfg.model_kind is not None:
        return cfg.model_kind
    return "base" if cfg.backend == "embedded" else "chat"


def prompt_form(cfg: GeneratorConfig) -> PromptForm:
    return "completion" if model_kind(cfg) == "base" else "chat"


def wants_guided_json(cfg: GeneratorConfig, form: PromptForm) -> bool:
    """Guided decoding unless configured: cheap in vLLM; through an OpenAI-compatible server
    only for chat prompts (JSON response formats are a chat feature there); off for embedded,
    where llama-cpp-python checks the grammar against the whole 262k-token Gemma vocabulary
    on every step (3.8x the time for the same answers, bench/RESULTS.md)."""
    if cfg.guided_json is not None:
        return cfg.guided_json
    return cfg.backend == "vllm" or (cfg.backend == "openai" and form == "chat")


EMBEDDED_REPETITION_PENALTY = 1.1


def repetition_penalty(cfg: GeneratorConfig) -> float | None:
    """The configured penalty; for embedded, 1.1 unless configured: the packaged Gemma, a base
    model, otherwise loops until max_tokens. Measured (bench/RESULTS.md): 5 of 6 complete
    answers instead of 3 of 6, with half the tokens."""
    if cfg.repetition_penalty is not None:
        return cfg.repetition_penalty
    return EMBEDDED_REPETITION_PENALTY if cfg.backend == "embedded" else None


def make_backend(cfg: GeneratorConfig) -> GeneratorBackend:
    """The backend `cfg.backend` names; its library is imported only now."""
    if cfg.backend == "embedded":
        from embedcurate.pipeline.generation.embedded_backend import EmbeddedBackend

        return EmbeddedBackend(cfg)
    if cfg.backend == "openai":
        from embedcurate.pipeline.generation.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.backend == "vllm":
        from embedcurate.pipeline.generation.vllm_backend import VLLMBackend

        return VLLMBackend(cfg)
    raise GenerationError(f"unknown generator backend {cfg.backend!r}")
