"""The CPU default: a GGUF model run in-process by llama.cpp (`llama-cpp-python`), no server.

The packaged Gemma 3 270M ships its GGUF in chunks; it is assembled once into the cache
folder (written under a temporary name, checked against its sha256 by the package, then
renamed) and reused after that. The model is loaded once per process and shared.

This is the only module that imports `llama_cpp`, and it does so lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.fan_out import worker_threads
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    ResultCallback,
)
from embedcurate.pipeline.hardware import cpu_has_amx
from embedcurate.pipeline.packaged import PACKAGED_GEMMA, cache_root, packaged_gemma_path

logger = logging.getLogger(__name__)

CONTEXT_TOKENS = 4096
PROMPT_TOKENS = 3072  # room for the few-shot prompt and the values written so far
THREADS_ENV = "EMBEDCURATE_LLAMA_THREADS"


@dataclasses.dataclass
class SharedModel:
    """One loaded llama.cpp model under its key (file, context, threads), the lock that
    serialises its use (a llama.cpp context runs one sequence at a time) and how many open
    backends hold it."""

    key: tuple[str, int, int]
    model: Any
    lock: threading.Lock
    holders: int = 0


_MODELS: dict[tuple[str, int, int], SharedModel] = {}
_MODELS_LOCK = threading.Lock()


def resolve_gguf(model: str, cache_dir: Path) -> Path:
    if model == PACKAGED_GEMMA:
        return packaged_gemma_path(cache_dir / "models")
    path = Path(model).expanduser()
    if path.is_file():
        return path.resolve()
    raise GenerationError(
        f"embedded backend: model {model!r} is neither the packaged {PACKAGED_GEMMA!r} "
        "nor a GGUF file"
    )


def default_threads() -> int:
    """`$EMBEDCURATE_LLAMA_THREADS`, else the threads the task holds on a Dask or Ray worker
    (two workers on one machine must not each take every core), else half the usable cores
    (llama.cpp's own default).

    Not all of them: llama.cpp's threads wait for each other at every layer, so when another
    process holds a core the whole step stalls. Measured on the shared 2-core machine while
    another job ran: 30 tokens/s with 1 thread, 2.4 tokens/s with 2.
    """
    configured = os.environ.get(THREADS_ENV)
    if configured:
        return max(1, int(configured))
    return worker_threads() or max(1, len(os.sched_getaffinity(0)) // 2)


@contextlib.contextmanager
def weights_in_plain_buffers() -> Iterator[None]:
    """Models loaded inside keep their weights out of llama.cpp's extra buffer types (AMX
    tiles, repacked layouts) on CPUs with AMX.

    On a CPU with AMX, llama-cpp-python 0.3.36 built for the host puts Gemma 3's weights in
    AMX buffers and dies of a segmentation fault on the first decode; in plain buffers the
    same model answers (2-core Xeon with AMX, 2026-12-02). `Llama` has no option for this, so
    the default model parameters it starts from are wrapped while it loads (under the
    models' lock: no other load runs meanwhile).
    """
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params
    if not cpu_has_amx() or not hasattr(defaults(), "use_extra_bufts"):
        yield
        return

    def plain_params() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = plain_params
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


def load_llama(
    path: Path, n_ctx: int = CONTEXT_TOKENS, n_threads: int | None = None
) -> SharedModel:
    """One llama.cpp model per (file, context, threads) per process, shared by the backends
    that hold it; `release_llama` it when done."""
    threads = n_threads or default_threads()
    key = (str(path), n_ctx, threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from llama_cpp import Llama

            logger.info("loading %s (n_ctx=%d, %d threads)", path, n_ctx, threads)
            with weights_in_plain_buffers():
                model = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=0,
                    verbose=False,
                )
            _MODELS[key] = SharedModel(key, model, threading.Lock())
        shared = _MODELS[key]
        shared.holders += 1
        return shared


def release_llama(shared: SharedModel) -> None:
    """Free the model once no backend holds it: its weights, KV cache and compute buffers
    (about 1 GB for the packaged Gemma, most of it the 262k-token logits) must not stay
    taken while the rest of a flow mines and trains. Loading again takes about a second
    (the file is memory-mapped)."""
    with _MODELS_LOCK:
        shared.holders -= 1
        if shared.holders > 0:
            return
        del _MODELS[shared.key]
    with shared.lock:  # a request still running on it finishes first
        shared.model.close()
    logger.info("released %s", shared.key[0])


class EmbeddedBackend:
    """Runs requests one after another on the in-process model.

    Consecutive completion prompts of one template share the preamble and the few-shot
    examples; llama.cpp keeps that prefix in its KV cache and evaluates only the new tail.
    """

    name = "embedded"

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.model_path = resolve_gguf(cfg.model, cfg.cache_dir or cache_root())
        self.model_id = cfg.model
        self.cache_identity = f"gguf:{cfg.model}:{self.model_path.stat().st_size}"
        self._n_ctx = max(CONTEXT_TOKENS, cfg.max_tokens + PROMPT_TOKENS)
        self._shared: SharedModel | None = None  # loaded by the first request
        self._grammars: dict[str, Any] = {}

    def generate(self, requests: Sequence[GenerationRequest], on_result: ResultCallback) -> None:
        """Loads the model on the first request: a run whose answers are all cached (a rerun,
        or the stage after workers generated its parts) never loads it."""
        if not requests:
            return
        if self._shared is None:
            self._shared = load_llama(self.model_path, self._n_ctx)
        shared = self._shared
        for index, request in enumerate(requests):
            try:
                with shared.lock:
                    result = self._complete(shared.model, request)
            except ValueError as exc:  # llama-cpp-python reports a prompt too long this way
                raise GenerationError(
                    f"embedded backend ({self.model_path}): request {index} failed: {exc}"
                ) from exc
            on_result(index, result)

    def _complete(self, llm: Any, request: GenerationRequest) -> GenerationResult:
        options = request.sampling.engine_options("repeat_penalty")
        if request.prompt.form == "chat":
            messages = [{"role": m.role, "content": m.content} for m in request.prompt.messages]
            if request.json_schema is not None:
                options["response_format"] = {"type": "json_object", "schema": request.json_schema}
            output = llm.create_chat_completion(messages=messages, **options)
            text = output["choices"][0]["message"]["content"] or ""
        else:
            if request.json_schema is not None:
                options["grammar"] = self._grammar(request.json_schema)
            output = llm.create_completion(prompt=request.prompt.text, **options)
            text = output["choices"][0]["text"]
        usage = output.get("usage") or {}
        return GenerationResult(
            text=text,
            finish_reason=output["choices"][0].get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    def _grammar(self, schema: dict[str, Any]) -> Any:
        text = json.dumps(schema, sort_keys=True)
        if text not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            self._grammars[text] = LlamaGrammar.from_json_schema(text, verbose=False)
        return self._grammars[text]

    def close(self) -> None:
        """Let go of the model: the last backend holding it frees it."""
        if self._shared is not None:
            release_llama(self._shared)
            self._shared = None


def serve(argv: list[str]) -> None:
    """llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server` and its options),
    loading the model as this backend does (`weights_in_plain_buffers`):

        python -m embedcurate.pipeline.generation.embedded_backend --model MODEL.gguf ...
    """
    import runpy
    import sys

    sys.argv = ["llama_cpp.server", *argv]
    with weights_in_plain_buffers():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    import sys

    serve(sys.argv[1:])
