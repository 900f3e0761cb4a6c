"""GPU readiness check: our teacher, trainer and multi-GPU code paths on one GPU, one table.

    python -m bench.gpu_check --out gpu_check.json          # one H200 (or any CUDA GPU)
    python -m bench.gpu_check --tiny --out /tmp/tiny.json   # the same code on CPU, tiny shapes
    python -m bench.gpu_check --sections matmul,trainer     # a subset

Needs torch, transformers, peft, accelerate, tokenizers and faiss-cpu (the project's own
dependencies); never vllm or faiss-gpu, never the network: every model is built here from a
config with random weights of the real shape (speed does not depend on the weights), saved
with an offline word-level tokenizer, and loaded back through our own loaders.

Sections (each with a time budget; a failing or overrunning section is reported in the table
and the next one runs):

- ``matmul``: the measured bf16 (and fp32) matmul peak, against the card's spec
  (``--peak-tflops``, 989 dense bf16 for an H100/H200 SXM).
- ``teacher_encoder``: `pipeline.mining.teacher.load_teacher` on a BERT-large-shaped encoder
  (the bge/e5-large class), documents encoded in bf16: texts/s and effective TFLOP/s.
- ``teacher_decoder``: the same on an e5-mistral-7B-shaped decoder (last-token pooling).
- ``teacher_replicas``: the teacher's one-replica-per-GPU path: the device list `auto` gives
  (one GPU, one replica), then a second replica on the same GPU so the thread-pool path that
  several GPUs take runs; its embeddings must equal the single replica's.
- ``faiss_index``: GPU-produced teacher embeddings into `pipeline.mining.index.VectorIndex`
  (faiss-cpu, flat and IVF), recall@k against exact top-k computed on the device.
- ``trainer``: `bench.trainer_throughput.measure_throughput` on the Mistral-7B shape with
  LoRA + latent attention: tokens/s, MFU, peak memory.
- ``trainer_ddp``: `model.trainer.train` launched by torchrun as one process, so accelerate
  takes its distributed path (DDP over NCCL on a GPU, gloo on CPU): gradient sync, the
  no_sync micro-batches, GradCache, rank-0 checkpoints and barriers, on real TRAIN shards
  (`accelerate launch --multi_gpu` refuses one process; torchrun is what it would call).
- ``trainer_fsdp``: the same under `accelerate launch --use_fsdp` (FSDP2 by default,
  ``--fsdp-version``), decoder layers wrapped; GPU only (skipped with ``--tiny``).

``--total-budget-s`` (450 s) caps the whole run, so it ends within 8 minutes.

Effective FLOPs of encoding count only real tokens (padding is waste): per text of s tokens,
2·N·s (N = weights outside the embeddings) + 4·L·d·s² (attention scores and mix).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.gpu_check")

REPO = Path(__file__).resolve().parents[1]
H200_BF16_DENSE_TFLOPS = 989.0
TOTAL_BUDGET_S = 450.0  # the whole check stays under 8 minutes with interpreter start-up
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>")
Figures = dict[str, float | int | str]


# ----- the run: options, device, shared workspace -------------------------------------------


@dataclass(frozen=True)
class Shapes:
    """Sizes of everything built, GPU-real or tiny."""

    encoder: dict[str, int]
    decoder: dict[str, int]
    ddp_backbone: dict[str, int]
    vocab_words: int
    encoder_docs: int
    decoder_docs: int
    max_length: int
    teacher_batch: int
    queries: int
    top_k: int
    matmul_sizes: tuple[int, ...]
    matmul_seconds: float  # timed per size and dtype
    trainer: dict[str, int]
    ddp_rows: int
    ddp_steps: int


GPU_SHAPES = Shapes(
    encoder={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}
    | {"intermediate_size": 4096, "vocab_size": 30522},
    decoder={"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32}
    | {"num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000},
    ddp_backbone={"hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 4}
    | {"num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 32000},
    vocab_words=8000,
    encoder_docs=8192,
    decoder_docs=2048,
    max_length=512,
    teacher_batch=64,
    queries=1024,
    top_k=50,
    matmul_sizes=(4096, 8192, 16384),
    matmul_seconds=0.5,
    trainer={"batch": 8, "negatives": 7, "seq": 512, "steps": 10, "warmup": 2},
    ddp_rows=256,
    ddp_steps=4,
)
TINY_SHAPES = Shapes(
    encoder={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    | {"intermediate_size": 128, "vocab_size": 1000},
    decoder={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    | {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
    ddp_backbone={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    | {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
    vocab_words=500,
    encoder_docs=96,
    decoder_docs=48,
    max_length=64,
    teacher_batch=16,
    queries=32,
    top_k=10,
    matmul_sizes=(128, 256),
    matmul_seconds=0.02,
    trainer={"batch": 2, "negatives": 1, "seq": 32, "steps": 2, "warmup": 1},
    ddp_rows=16,
    ddp_steps=2,
)


@dataclass
class Run:
    """What the sections share: options, the device, a scratch folder, models built once."""

    tiny: bool
    device: str  # "cuda:0" or "cpu"
    peak_tflops: float
    work_dir: Path
    shapes: Shapes
    budget_scale: float = 1.0
    fsdp_version: int = 2
    deadline: float = float("inf")  # time.monotonic() by which every section must be done
    built: dict[str, Any] = field(default_factory=dict)  # model folders, embeddings, peaks

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class SectionResult:
    name: str
    status: str  # ok | failed | timeout | skipped (cannot run here) | not run (no time left)
    seconds: float
    budget_s: float
    figures: Figures = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Run], Figures]
    budget_gpu_s: float
    budget_tiny_s: float
    what: str


class SectionTimeout(Exception):
    """A section ran past its budget (raised from SIGALRM between Python bytecodes)."""


class SectionSkipped(Exception):
    """A section that cannot run here (says why); not a failure of the check."""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise SectionTimeout(f"over its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----- synthetic text and an offline tokenizer -----------------------------------------------


def vocabulary(num_words: int, seed: int = 0) -> list[str]:
    """Distinct pronounceable-ish lowercase words; no network, no data set."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: set[str] = set()
    while len(words) < num_words:
        length = int(rng.integers(3, 10))
        words.add("".join(rng.choice(letters, size=length)))
    return sorted(words)


def synthetic_texts(words: list[str], count: int, max_words: int, seed: int) -> list[str]:
    """`count` texts whose lengths spread from short to `max_words` (Zipf word choice)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1)
    weights = 1.0 / ranks
    weights /= weights.sum()
    lengths = np.clip(rng.lognormal(np.log(max_words / 3), 0.6, size=count), 4, max_words)
    return [" ".join(rng.choice(words, size=int(n), p=weights)) for n in lengths.astype(np.int64)]


def build_tokenizer(words: list[str], max_length: int) -> Any:
    """A word-level fast tokenizer over `words` (offsets work, as the embedder needs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="</s>",
        model_max_length=max_length,
    )


def corpus(run: Run) -> tuple[list[str], Any]:
    """(vocabulary, tokenizer), built once per run."""
    if "words" not in run.built:
        words = vocabulary(run.shapes.vocab_words)
        run.built["words"] = words
        run.built["tokenizer"] = build_tokenizer(words, run.shapes.max_length)
    return run.built["words"], run.built["tokenizer"]


def save_random_model(run: Run, name: str, config: Any) -> Path:
    """A random-weight model of `config` and our tokenizer in a folder (built once).

    Written under a temporary name and renamed, so a section stopped mid-save leaves no
    folder that a later section would take for a complete model.
    """
    import torch
    from transformers import AutoModel

    folder = run.work_dir / name
    if folder.is_dir():
        return folder
    _, tokenizer = corpus(run)
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    dtype = torch.bfloat16 if run.on_gpu else torch.float32
    with torch.device(run.device):  # initialising 7 B weights on the CPU takes minutes
        model = AutoModel.from_config(config, dtype=dtype)
    partial = run.work_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    del model
    release_memory(run)
    partial.rename(folder)
    return folder


def release_memory(run: Run) -> None:
    gc.collect()
    if run.on_gpu:
        import torch

        torch.cuda.empty_cache()


def encoder_folder(run: Run) -> Path:
    from transformers import BertConfig

    sizes = run.shapes.encoder
    return save_random_model(
        run, "encoder", BertConfig(**sizes, max_position_embeddings=run.shapes.max_length)
    )


def decoder_folder(run: Run, name: str, sizes: dict[str, int]) -> Path:
    from transformers import MistralConfig

    config = MistralConfig(**sizes, max_position_embeddings=4096, sliding_window=None)
    return save_random_model(run, name, config)


# ----- measurements --------------------------------------------------------------------------


def synchronize(run: Run) -> None:
    if run.on_gpu:
        import torch

        torch.cuda.synchronize()


def peak_memory_figure(run: Run) -> Figures:
    """{"peak_mem_gib": ...} on a GPU (torch.cuda.max_memory_allocated); nothing on CPU."""
    import torch

    if not run.on_gpu:
        return {}
    return {"peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def matmul_tflops(run: Run, size: int, dtype: Any) -> float:
    import torch

    a = torch.randn(size, size, device=run.device, dtype=dtype)
    b = torch.randn(size, size, device=run.device, dtype=dtype)
    for _ in range(2):  # warm-up: kernel selection, clocks
        torch.matmul(a, b)
    synchronize(run)
    started = time.perf_counter()
    torch.matmul(a, b)
    synchronize(run)
    once = time.perf_counter() - started
    # enough repeats to fill the target time, so launch latency and clock ramps average out
    repeats = min(200, max(3, math.ceil(run.shapes.matmul_seconds / max(once, 1e-6))))
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    synchronize(run)
    seconds = (time.perf_counter() - started) / repeats
    return 2 * size**3 / seconds / 1e12


def section_matmul(run: Run) -> Figures:
    import torch

    figures: Figures = {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        best = max(matmul_tflops(run, size, dtype) for size in run.shapes.matmul_sizes)
        figures[f"{label}_tflops"] = best
        run.built[f"peak_{label}"] = best
    figures["bf16_vs_spec"] = figures["bf16_tflops"] / run.peak_tflops  # type: ignore[operator]
    figures["sizes"] = ",".join(str(s) for s in run.shapes.matmul_sizes)
    return figures


def encoding_flops(model_config: Any, non_embedding_params: int, lengths: np.ndarray) -> float:
    """Useful forward FLOPs over texts of `lengths` real tokens: 2·N·s + 4·L·d·s² each."""
    layers, hidden = model_config.num_hidden_layers, model_config.hidden_size
    s = lengths.astype(np.float64)
    return float((2 * non_embedding_params * s + 4 * layers * hidden * s**2).sum())


def non_embedding_params(model: Any) -> int:
    """Weights every token multiplies (a BERT pooler only sees the first token: left out)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if "embed" not in name and "pooler" not in name
    )


def measure_teacher(run: Run, folder: Path, pooling: str, num_docs: int) -> Figures:
    """Load the folder with our teacher loader and time `encode_documents` over synthetic docs."""
    import torch

    from embedcurate.pipeline.blend import TeacherConfig
    from embedcurate.pipeline.mining.teacher import load_teacher

    words, tokenizer = corpus(run)
    docs = synthetic_texts(words, num_docs, run.shapes.max_length, seed=1)
    cfg = TeacherConfig(
        model=str(folder),
        pooling=pooling,  # type: ignore[arg-type]
        batch_size=run.shapes.teacher_batch,
        max_length=run.shapes.max_length,
        cache=False,
        backend="torch",  # the GPU paths under test; OpenVINO is CPU-only
    )
    if run.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    teacher = load_teacher(cfg)
    load_s = time.perf_counter() - started
    teacher.encode_documents(docs[: run.shapes.teacher_batch])  # warm-up: kernels, allocator
    synchronize(run)
    started = time.perf_counter()
    embeddings = teacher.encode_documents(docs)
    synchronize(run)
    seconds = time.perf_counter() - started
    lengths = np.array(
        [len(ids) for ids in tokenizer(docs, truncation=True, max_length=cfg.max_length).input_ids]
    )
    model = teacher.model  # type: ignore[union-attr]
    flops = encoding_flops(model.config, non_embedding_params(model), lengths)
    tflops = flops / seconds / 1e12
    dtype_label = str(teacher.dtype).removeprefix("torch.")  # type: ignore[union-attr]
    measured_peak = run.built.get("peak_bf16" if dtype_label == "bfloat16" else "peak_fp32")
    figures: Figures = {
        "devices": ",".join(teacher.devices),  # type: ignore[union-attr]
        "dtype": dtype_label,
        "params_b": non_embedding_params(model) / 1e9,
        "load_s": load_s,
        "texts": len(docs),
        "mean_tokens": float(lengths.mean()),
        "texts_per_s": len(docs) / seconds,
        "tokens_per_s": float(lengths.sum()) / seconds,
        "eff_tflops": tflops,
        "vs_spec": tflops / run.peak_tflops,
    } | peak_memory_figure(run)
    if measured_peak:
        figures["vs_measured_peak"] = tflops / measured_peak
    if not np.isfinite(embeddings).all():
        raise ValueError(f"the teacher from {folder} produced non-finite embeddings")
    return figures


def section_teacher_encoder(run: Run) -> Figures:
    return measure_teacher(run, encoder_folder(run), "mean", run.shapes.encoder_docs)


def section_teacher_decoder(run: Run) -> Figures:
    folder = decoder_folder(run, "decoder", run.shapes.decoder)
    try:
        return measure_teacher(run, folder, "last", run.shapes.decoder_docs)
    finally:
        release_memory(run)


def section_teacher_replicas(run: Run) -> Figures:
    """One replica (what `device: auto` gives on one GPU), then two on that GPU: same output."""
    from embedcurate.pipeline.blend import TeacherConfig
    from embedcurate.pipeline.mining import teacher as teacher_module

    words, _ = corpus(run)
    docs = synthetic_texts(words, run.shapes.encoder_docs // 2, run.shapes.max_length, seed=2)
    cfg = TeacherConfig(
        model=str(encoder_folder(run)),
        batch_size=run.shapes.teacher_batch,
        max_length=run.shapes.max_length,
        cache=False,
        backend="torch",  # the GPU paths under test; OpenVINO is CPU-only
    )
    teacher = teacher_module.HFTeacher(cfg)
    auto_devices = list(teacher.devices)
    teacher.encode(docs)  # warm-up over every batch shape, so both timings start equal
    synchronize(run)
    started = time.perf_counter()
    single = teacher.encode(docs)
    synchronize(run)
    single_s = time.perf_counter() - started
    # what HFTeacher does per extra GPU, here on the same device: the thread-pool path runs
    teacher.devices.append(teacher.devices[0])
    teacher.replicas.append(teacher_module._replica(teacher.model, teacher.devices[0]))
    started = time.perf_counter()
    double = teacher.encode(docs)
    synchronize(run)
    double_s = time.perf_counter() - started
    max_diff = float(np.abs(single - double).max())
    if max_diff > 1e-3:
        raise ValueError(f"two replicas disagree with one by up to {max_diff:.2e}")
    return {
        "auto_devices": ",".join(auto_devices),
        "texts": len(docs),
        "one_replica_texts_per_s": len(docs) / single_s,
        "two_replicas_texts_per_s": len(docs) / double_s,
        "max_abs_diff": max_diff,
    }


def teacher_embeddings(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(documents, queries) embedded by the encoder teacher on the run's device."""
    from embedcurate.pipeline.blend import TeacherConfig
    from embedcurate.pipeline.mining.teacher import load_teacher

    words, _ = corpus(run)
    docs = synthetic_texts(words, run.shapes.encoder_docs, run.shapes.max_length, seed=3)
    queries = synthetic_texts(words, run.shapes.queries, 24, seed=4)
    cfg = TeacherConfig(
        model=str(encoder_folder(run)),
        batch_size=run.shapes.teacher_batch,
        max_length=run.shapes.max_length,
        cache=False,
        backend="torch",  # the GPU paths under test; OpenVINO is CPU-only
    )
    teacher = load_teacher(cfg)
    return teacher.encode_documents(docs), teacher.encode_queries(queries)


def exact_top_k(run: Run, docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k best documents per query, fp32 matmul on the device (no TF32)."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        doc_tensor = torch.from_numpy(docs).to(run.device)
        scores = torch.from_numpy(queries).to(run.device) @ doc_tensor.T  # (queries, docs)
        return scores.topk(k, dim=1).indices.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


def section_faiss_index(run: Run) -> Figures:
    from embedcurate.pipeline.mining.index import IndexConfig, VectorIndex

    docs, queries = teacher_embeddings(run)
    k = run.shapes.top_k
    started = time.perf_counter()
    truth = exact_top_k(run, docs, queries, k)
    exact_s = time.perf_counter() - started
    figures: Figures = {"docs": len(docs), "queries": len(queries), "k": k}
    figures["device_exact_s"] = exact_s
    for kind in ("flat", "ivf"):
        started = time.perf_counter()
        index = VectorIndex(docs.shape[1], len(docs), IndexConfig(kind=kind))
        for start in range(0, len(docs), 4096):
            index.add(docs[start : start + 4096])
        index.finalize()
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        rows = np.concatenate([r for _, _, r in index.search_chunked(queries, k, 4096)])
        search_s = time.perf_counter() - started
        figures[f"{kind}_on_gpu"] = str(index.on_gpu)
        figures[f"{kind}_build_s"] = build_s
        figures[f"{kind}_search_s"] = search_s
        figures[f"{kind}_recall_at_k"] = recall_at_k(rows, truth)
    return figures


def section_trainer(run: Run) -> Figures:
    import torch

    from bench.trainer_throughput import measure_throughput, mistral_config

    if run.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    sizes = run.shapes.trainer
    result = measure_throughput(
        mistral_config(run.tiny),
        torch.device(run.device),
        batch=sizes["batch"],
        negatives=sizes["negatives"],
        seq=sizes["seq"],
        steps=sizes["steps"],
        warmup=sizes["warmup"],
        peak_tflops=run.peak_tflops,
    )
    release_memory(run)
    figures: Figures = {
        "shape": "tiny mistral" if run.tiny else "mistral-7b",
        "params_b": result.backbone_params / 1e9,
        "texts_per_step": sizes["batch"] * (2 + sizes["negatives"]),
        "seq": sizes["seq"],
        "step_s": result.seconds_per_step,
        "tokens_per_s": result.tokens_per_second,
        "model_tflops": result.model_tflops,
        "mfu": result.mfu,
    }
    if result.peak_memory_gib is not None:
        figures["peak_mem_gib"] = result.peak_memory_gib
    return figures


# ----- the launched trainer ------------------------------------------------------------------


def train_rows(words: list[str], count: int, negatives: int) -> list[dict[str, Any]]:
    """TRAIN rows in the pipeline's schema: synthetic queries, positives and negatives."""
    from embedcurate.pipeline.instructions import render

    instruction = "Given a question, retrieve the passage that answers it"
    queries = synthetic_texts(words, count, 16, seed=5)
    docs = synthetic_texts(words, count * (1 + negatives), 48, seed=6)
    rows = []
    for index, query in enumerate(queries):
        templated = render(instruction, query)
        start = index * (1 + negatives)
        rows.append(
            {
                "example_id": f"g{index}",
                "source": "gpu_check",
                "task_type": "retrieval",
                "task_name": "Synthetic",
                "stage": 1,
                "instruction": instruction,
                "query": templated.text,
                "query_instruction_chars": templated.instruction_chars,
                "positive": docs[start],
                "negatives": docs[start + 1 : start + 1 + negatives],
                "doc_instruction_chars": 0,
                "pos_score": 0.5,
                "neg_scores": [0.1] * negatives,
                "label": None,
                "teacher": "gpu_check",
                "mining_rule": "none",
            }
        )
    return rows


def write_train_shards(run: Run, folder: Path) -> Path:
    from embedcurate.pipeline.schemas import TableKind, rows_to_table
    from embedcurate.pipeline.shards import write_shards

    words, _ = corpus(run)
    rows = train_rows(words, run.shapes.ddp_rows, negatives=3)
    write_shards(rows_to_table(rows, TableKind.TRAIN), folder, TableKind.TRAIN, rows_per_shard=64)
    return folder


def section_trainer_ddp(run: Run) -> Figures:
    """torchrun, one process: accelerate's DDP path (NCCL on a GPU, gloo on CPU)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    figures = launch_trainer(run, "ddp", [*launcher, "--nproc_per_node", "1"])
    expected = "MULTI_GPU" if run.on_gpu else "MULTI_CPU"
    if figures["distributed_type"] != expected:
        raise RuntimeError(f"accelerate ran {figures['distributed_type']}, not {expected}")
    return figures


def section_trainer_fsdp(run: Run) -> Figures:
    """`accelerate launch --use_fsdp`, one process, decoder layers wrapped (GPU only)."""
    if not run.on_gpu:
        raise SectionSkipped(
            "needs a GPU: on a CPU-only machine accelerate refuses FSDP1 and runs FSDP2 as "
            "plain DDP"
        )
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp"]
    launcher += ["--fsdp_version", str(run.fsdp_version), "--num_processes", "1"]
    launcher += ["--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    launcher += ["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"]
    launcher += ["--fsdp_transformer_layer_cls_to_wrap", "MistralDecoderLayer"]
    figures = launch_trainer(run, "fsdp", launcher)
    if figures["distributed_type"] != "FSDP":
        raise RuntimeError(f"accelerate ran {figures['distributed_type']}, not FSDP")
    return {"fsdp_version": run.fsdp_version} | figures


def launch_trainer(run: Run, name: str, launcher: list[str]) -> Figures:
    """Run `ddp_worker` under `launcher` (torchrun or accelerate launch) and read its figures."""
    backbone = decoder_folder(run, "launch-backbone", run.shapes.ddp_backbone)
    shards = run.work_dir / "train-shards"
    if not shards.is_dir():
        write_train_shards(run, shards)
    result_path = run.work_dir / f"{name}-result.json"
    spec = {
        "shards": str(shards),
        "out": str(run.work_dir / f"{name}-run"),
        "backbone": str(backbone),
        "device": "cuda" if run.on_gpu else "cpu",
        "steps": run.shapes.ddp_steps,
        "tiny": run.tiny,
        "result": str(result_path),
    }
    command = [*launcher, "-m", "bench.gpu_check", "--ddp-worker", json.dumps(spec)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), _pythonpath()]))}
    started = time.perf_counter()
    returncode, output = run_torchrun(command, env)
    seconds = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"{launcher[2]} exited {returncode}: {last_error(output)}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    return {"launch_s": seconds} | result


EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*:")


def last_error(output: str) -> str:
    """The worker's own exception line from a launcher's stderr (torchrun adds pages of its
    own around it), else the end of the output."""
    raised = [
        line
        for line in output.splitlines()
        if EXCEPTION_LINE.match(line) and "ChildFailedError" not in line
    ]
    return (raised[0] if raised else output[-1000:]).strip()[:800]


def run_torchrun(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """(exit code, stderr) of torchrun; it dies with us, and on a timeout stops its workers.

    torchrun starts each worker in its own session and stops them when it gets SIGTERM, so
    SIGTERM (then SIGKILL after a grace period) goes to torchrun, never to a process group.
    """
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: die_with_parent(signal.SIGTERM),
    )
    try:
        _, stderr = process.communicate()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    return process.returncode, stderr


def die_with_parent(sig: signal.Signals) -> None:
    """Linux: the kernel sends `sig` to this process when its parent exits (even on SIGKILL)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(sig))


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def ddp_worker(spec: dict[str, Any]) -> None:
    """Runs inside torchrun: both stages for a few steps, and what accelerate chose.

    Stage 1 takes two micro-batches per step (the first under DDP's no_sync), stage 2 runs
    GradCache (chunked forwards without activations, then chunk-wise backward under DDP).
    """
    import dataclasses

    import torch
    from accelerate import PartialState

    die_with_parent(signal.SIGKILL)  # a torchrun killed outright takes its worker with it

    from embedcurate.model.config import LatentAttentionConfig, make_train_config
    from embedcurate.model.trainer import list_checkpoints, train

    cfg = make_train_config(
        spec["backbone"],
        stages="both",
        max_steps=spec["steps"],
        device=spec["device"],
        checkpoint_every=spec["steps"],
        progress=False,
        shuffle_buffer=64,
    )
    latent = LatentAttentionConfig(num_latents=16, num_heads=4, ff_multiplier=2)
    rows = {"batch_size": 8, "num_hard_negatives": 3, "warmup_steps": 0}
    cfg = dataclasses.replace(
        cfg,
        embedder=dataclasses.replace(
            cfg.embedder,
            latent=latent if spec["tiny"] else cfg.embedder.latent,
            max_query_length=32,
            max_doc_length=64,
        ),
        stage1=dataclasses.replace(cfg.stage1, grad_accum_steps=2, **rows),
        stage2=dataclasses.replace(cfg.stage2, cache_chunk_size=4, **rows),
    )
    report = train(spec["shards"], spec["out"], cfg)
    state = PartialState()
    if state.is_main_process:
        result: Figures = {
            "distributed_type": str(state.distributed_type).split(".")[-1],
            "backend": str(state.backend),
            "world_size": state.num_processes,
            "checkpoints": len(list_checkpoints(spec["out"])),
        }
        for stage, label in zip(report.stages, ("accum", "gradcache"), strict=True):
            if stage.first_loss is None or stage.last_loss is None or not stage.tokens_per_second:
                raise RuntimeError(f"stage {stage.stage} in {spec['out']} ran no steps")
            result[f"{label}_steps"] = stage.steps
            result[f"{label}_first_loss"] = stage.first_loss
            result[f"{label}_last_loss"] = stage.last_loss
            result[f"{label}_tokens_per_s"] = stage.tokens_per_second
        Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    state.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ----- the table -----------------------------------------------------------------------------

SECTIONS = (
    Section("matmul", section_matmul, 20, 20, "bf16/fp32 matmul peak"),
    Section("teacher_encoder", section_teacher_encoder, 45, 30, "BERT-large-shaped teacher"),
    Section("teacher_decoder", section_teacher_decoder, 130, 30, "e5-mistral-7B-shaped teacher"),
    Section("teacher_replicas", section_teacher_replicas, 30, 30, "replica-per-GPU path"),
    Section("faiss_index", section_faiss_index, 25, 30, "faiss-cpu on device embeddings"),
    Section("trainer", section_trainer, 110, 60, "Mistral-7B LoRA + latent attention"),
    Section("trainer_ddp", section_trainer_ddp, 50, 90, "trainer under torchrun (DDP)"),
    Section("trainer_fsdp", section_trainer_fsdp, 60, 5, "trainer under accelerate FSDP"),
)


def run_section(run: Run, section: Section) -> SectionResult:
    budget = (section.budget_tiny_s if run.tiny else section.budget_gpu_s) * run.budget_scale
    time_left = run.deadline - time.monotonic()
    result = SectionResult(section.name, "ok", 0.0, min(budget, max(time_left, 0.0)))
    if time_left < 1:
        result.status, result.error = "not run", "no time left (--total-budget-s)"
        return result
    budget = result.budget_s
    logger.info("section %s (%s), budget %.0f s", section.name, section.what, budget)
    started = time.perf_counter()
    try:
        with time_budget(budget):
            result.figures = section.run(run)
    except SectionTimeout as exc:
        result.status, result.error = "timeout", str(exc)
    except SectionSkipped as exc:
        result.status, result.error = "skipped", str(exc)
    except Exception as exc:  # a section's failure is a row of the table, not the end of the run
        logger.exception("section %s failed", section.name)
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        release_memory(run)
    result.seconds = round(time.perf_counter() - started, 2)
    result.figures = {name: significant(value) for name, value in result.figures.items()}
    return result


def significant(value: float | int | str, digits: int = 4) -> float | int | str:
    """Floats to `digits` significant digits (tiny CPU figures stay readable, not 0); a NaN or
    infinity becomes its name, so the JSON stays valid and a reader sees it is no number."""
    if not isinstance(value, float):
        return value
    return float(f"{value:.{digits}g}") if math.isfinite(value) else str(value)


def format_value(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(results: list[SectionResult]) -> str:
    lines = ["| section | status | seconds | figures |", "|---|---|---:|---|"]
    for result in results:
        figures = "; ".join(f"{k} {format_value(v)}" for k, v in result.figures.items())
        if result.error:
            figures = f"{figures}; {result.error}" if figures else result.error
        lines.append(
            f"| {result.name} | {result.status} | {result.seconds:.1f} | "
            f"{figures.replace('|', '/')} |"
        )
    return "\n".join(lines)


def describe_device(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info |= {
            "device": torch.cuda.get_device_name(device),
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "gpus_visible": torch.cuda.device_count(),
        }
    else:
        info |= {"device": f"cpu ({platform.processor() or platform.machine()})"}
        info |= {"torch_threads": torch.get_num_threads()}
    return info


def pick_sections(names: str | None) -> list[Section]:
    if not names:
        return list(SECTIONS)
    known = {section.name: section for section in SECTIONS}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(
            f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [known[name] for name in wanted]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (CI)")
    parser.add_argument(
        "--sections", help="comma-separated subset: " + ",".join(s.name for s in SECTIONS)
    )
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every section's time budget"
    )
    parser.add_argument(
        "--total-budget-s",
        type=float,
        default=TOTAL_BUDGET_S,
        help="stop starting sections, and cut the running one, after this many seconds",
    )
    parser.add_argument("--fsdp-version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)  # JSON spec, set by trainer_ddp
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # no model hub, no data set hub: everything is built here
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if str(REPO) not in sys.path:  # `python bench/gpu_check.py`: make `bench.` importable
        sys.path.insert(0, str(REPO))
    if args.ddp_worker:
        ddp_worker(json.loads(args.ddp_worker))
        return 0
    sections = pick_sections(args.sections)
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda:0"
    if args.tiny:
        # tiny models are far too small to share between threads; on a busy CPU spinning
        # OpenMP threads slow them down tenfold (the model tests pin one thread too)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # the torchrun worker
    if not args.tiny and device == "cpu":
        raise SystemExit("no CUDA device is visible; run with --tiny for the CPU check")
    started = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run = Run(
            tiny=args.tiny,
            device=device,
            peak_tflops=args.peak_tflops,
            work_dir=work_dir,
            shapes=TINY_SHAPES if args.tiny else GPU_SHAPES,
            budget_scale=args.budget_scale,
            fsdp_version=args.fsdp_version,
            deadline=time.monotonic() + args.total_budget_s,
        )
        results = [run_section(run, section) for section in sections]
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "tiny": args.tiny,
        "peak_tflops_spec": args.peak_tflops,
        **describe_device(device),
        "sections": [asdict(result) for result in results],
    }
    header = (
        f"gpu_check {report['started_utc']} on {report['device']} (torch {report['torch']}), "
        f"{'tiny shapes' if args.tiny else 'real shapes'}, {report['wall_s']} s"
    )
    print(header)
    print(markdown_table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(report, indent=2, allow_nan=False, default=str), encoding="utf-8"
        )
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
