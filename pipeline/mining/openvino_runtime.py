"""The teacher's transformer run by OpenVINO on CPU: the fast CPU path for mining.

Why: on a CPU, PyTorch's eager kernels leave much of the machine idle for a small encoder
(measured in `bench/RESULTS.md`: the MiniLM teacher reached about 40% of the bf16 matmul peak
in PyTorch). OpenVINO fuses attention, layer norm and GELU and runs the graph in bf16 on CPUs
with native bf16 (AVX512-BF16, AMX), about 1.6x faster here at a closer agreement with fp32.

The model is converted once from the Hugging Face weights (`openvino.convert_model` traces
the transformers module; no exporter package needed) and the result is kept as OpenVINO IR
(an XML graph and a raw weights file, nothing pickled) under the cache root, keyed by the
weights' identity and the two libraries' versions. Later loads read the IR and compile it,
and OpenVINO's own compiled-model cache makes that fast too. Written like the embedding
cache: weights file first, graph last, each atomically, so a killed conversion leaves no IR
a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from embedcurate.pipeline.atomic import atomic_path
from embedcurate.pipeline.packaged import cache_root

logger = logging.getLogger(__name__)

GRAPH = "model.xml"
WEIGHTS = "model.bin"
# OpenVINO's names for the precisions a teacher's `dtype` asks for
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
EXAMPLE_TEXTS = ["an example sentence for tracing", "a second, longer example sentence here"]


def available_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def ir_folder(name: str, weights_identity: list[Any]) -> Path:
    """Where the converted model of these weights lives (one folder per weights + versions);
    `name` (the teacher's model name) only makes the folder readable."""
    import openvino
    import transformers

    identity = {
        "weights": weights_identity,
        "openvino": openvino.__version__,
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "openvino" / f"{Path(name).name}-{digest}"


def convert_to_ir(model_path: str, tokenizer: Any, folder: Path) -> None:
    """Trace the fp32 transformers model into OpenVINO IR in `folder` (weights kept fp32)."""
    import openvino
    import torch
    from transformers import AutoModel

    # safetensors only: a pickled pytorch_model.bin is refused, never unpickled
    model = AutoModel.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    # plain tuples out and no key/value cache: the tracer takes tensors only, and a teacher
    # needs the last hidden state alone (output 0)
    model.config.use_cache = False
    model.config.return_dict = False
    example = dict(tokenizer(EXAMPLE_TEXTS, padding=True, return_tensors="pt"))
    with torch.inference_mode(), warnings.catch_warnings():
        # the tracer flags Python branches on shapes; for an encoder they are constants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = openvino.convert_model(model.eval(), example_input=example)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".staging-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    try:
        openvino.save_model(converted, staging / GRAPH, compress_to_fp16=False)
        # weights first, graph last: the graph's presence marks a complete IR
        for name in (WEIGHTS, GRAPH):
            with atomic_path(folder / name) as tmp:
                os.replace(staging / name, tmp)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    logger.info("converted %s to OpenVINO IR in %s", model_path, folder)


class OpenVINOEncoder:
    """Last hidden states of batches, computed by a compiled OpenVINO model.

    One inference stream per CPU thread, each stream one thread: batches run side by side on
    the cores instead of splitting each small matrix product across them (about 10% more
    texts per CPU-second for MiniLM here). A batch's result does not depend on its stream or
    on the thread count, so the embeddings are the same whatever `threads` is.
    """

    def __init__(self, folder: Path, dtype: str, threads: int) -> None:
        import openvino

        core = openvino.Core()
        core.set_property({"CACHE_DIR": str(cache_root() / "openvino" / "compiled")})
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype],
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": threads,
            "PERFORMANCE_HINT": "THROUGHPUT",
            # OpenVINO pins its threads to the first cores: two one-thread workers on one
            # machine would share core 0 (measured: no speed-up from a second Dask worker),
            # so pin only when this process has every core it may use
            "ENABLE_CPU_PINNING": threads >= available_cpus(),
        }
        self.compiled = core.compile_model(core.read_model(folder / GRAPH), "CPU", config)
        self.input_names = {port.get_any_name() for port in self.compiled.inputs}
        self.queue = openvino.AsyncInferQueue(self.compiled, threads)

    def map_batches(
        self,
        batches: Iterable[tuple[Any, dict[str, np.ndarray]]],
        on_hidden: Callable[[Any, np.ndarray], None],
    ) -> None:
        """Run every (key, batch); `on_hidden(key, last_hidden_state)` hears of each as it
        finishes (from OpenVINO's threads, in any order). Raises the first callback error."""
        errors: list[BaseException] = []

        def finished(request: Any, key: Any) -> None:
            try:
                hidden = np.array(request.output_tensors[0].data, dtype=np.float32, copy=True)
                on_hidden(key, hidden)
            except BaseException as exc:  # raised again below, in the caller's thread
                errors.append(exc)

        self.queue.set_callback(finished)
        for key, batch in batches:
            inputs = {name: value for name, value in batch.items() if name in self.input_names}
            self.queue.start_async(inputs, key)
        self.queue.wait_all()
        if errors:
            raise errors[0]


def load_openvino_encoder(
    name: str,
    model_path: str,
    tokenizer: Any,
    weights_identity: list[Any],
    dtype: str,
    threads: int,
) -> OpenVINOEncoder:
    """The compiled encoder, converting the model first if no complete IR is cached."""
    folder = ir_folder(name, weights_identity)
    if not (folder / GRAPH).is_file() or not (folder / WEIGHTS).is_file():
        convert_to_ir(model_path, tokenizer, folder)
    return OpenVINOEncoder(folder, dtype, threads)
