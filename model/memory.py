"""Fit a training step to the device it runs on, before step 1.

NV-Embed's settings (128 rows a micro-batch, 7 hard negatives, 512 tokens) are GPU settings: on
a CPU they hold ~1,150 texts' activations at once, tens of GiB for even a MiniLM. The planner
estimates a micro-batch's peak activation memory from the backbone's shape and the length
limits, and, when it does not fit the memory free on the device, turns GradCache on (see
model/trainer.py) with the largest chunk that fits. GradCache gives the same gradient as the
whole batch, so the effective batch, its in-batch negatives and the lengths stay as
configured; only the time per step grows. When even a one-text chunk cannot fit, or an
explicitly chosen chunk is too big, training is refused before step 1 with the flags to change.

The estimate (bytes of activations kept for backward, per token of a padded text) is

    layers * bytes * (28 * hidden + 6 * intermediate + 3 * heads * tokens)      # backbone
    + 4 * (3 * latent_heads * num_latents + 16 * hidden)                          # latent layer

the constants fitted to measured peak RSS of a forward and backward of the packaged MiniLM
with LoRA on every linear layer (their dropout copies each layer's inputs), 630-890 KiB per
token at 128-512 tokens, with SAFETY_FACTOR on top. With gradient checkpointing only each
layer's input is kept, plus one layer's full activations during its recomputation.

The bytes per value are the backbone weights' (4 on CPU, where they stay float32), also under
bf16 autocast: autocast keeps matmul inputs in bf16, so the float32 estimate is an upper bound
there (the data-quality student's peak RSS was 3.0-3.2 GiB under bf16 against 3.9-4.3 GiB
in fp32, same chunks; `bench/RESULTS.md`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from embedcurate.model.backbone import uses_checkpointing
from embedcurate.model.config import StageConfig, TrainConfig
from embedcurate.pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

SAFETY_FACTOR = 1.25
# Share of the free memory a step may plan to use: the CPU is usually shared (page cache,
# other jobs, the data pipeline); a GPU keeps room for the allocator's fragmentation.
CPU_BUDGET_SHARE = 0.5
GPU_BUDGET_SHARE = 0.8
ADAM_BYTES_PER_TRAINABLE = 16  # fp32 gradient, two moments, and the update's temporaries
CGROUP_DIR = Path("/sys/fs/cgroup")


class MemoryBudgetError(ConfigError, ValueError):
    """A training step that cannot fit the device's free memory, found before step 1 (a
    configuration error: `curate --train` reports it, and no retry can make it fit)."""


@dataclass(frozen=True)
class ModelShape:
    """What the activation estimate needs to know about the embedder."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    bytes_per_value: int
    checkpointing: bool
    latent_heads: int  # 0 when the latent layer is off
    num_latents: int
    num_trainable: int

    @classmethod
    def of(cls, embedder: Any) -> ModelShape:
        """Read the shape off a built Embedder (its backbone's Hugging Face config)."""
        config = embedder.backbone.config
        hidden = int(config.hidden_size)
        latent_cfg = embedder.cfg.latent
        weights = next(embedder.backbone.parameters())
        return cls(
            num_layers=int(config.num_hidden_layers),
            hidden_size=hidden,
            intermediate_size=int(getattr(config, "intermediate_size", None) or 4 * hidden),
            num_heads=int(config.num_attention_heads),
            bytes_per_value=weights.element_size(),
            checkpointing=uses_checkpointing(embedder.cfg.backbone, weights.device),
            latent_heads=latent_cfg.num_heads if embedder.latent is not None else 0,
            num_latents=latent_cfg.num_latents,
            num_trainable=sum(p.numel() for p in embedder.trainable_parameters()),
        )

    def bytes_per_token(self, tokens: int) -> float:
        """Activation bytes kept for backward per token of a text padded to `tokens`."""
        layer = self.bytes_per_value * (
            28 * self.hidden_size + 6 * self.intermediate_size + 3 * self.num_heads * tokens
        )
        if self.checkpointing:
            backbone = self.num_layers * self.bytes_per_value * self.hidden_size + layer
        else:
            backbone = self.num_layers * layer
        latent = 4 * (3 * self.latent_heads * self.num_latents + 16 * self.hidden_size)
        return (backbone + (latent if self.latent_heads else 0)) * SAFETY_FACTOR

    def text_bytes(self, tokens: int) -> float:
        return tokens * self.bytes_per_token(tokens)


@dataclass(frozen=True)
class StagePlan:
    stage: int
    texts_per_micro_batch: int
    chunk_size: int | None  # GradCache chunk (texts); None = the micro-batch in one go
    estimated_peak_bytes: int
    budget_bytes: int


def free_memory_bytes(device: torch.device) -> int:
    """Memory a step can still take: free GPU memory, or available RAM (cgroup limit too)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    available = int(psutil.virtual_memory().available)
    limits = [h for h in (_cgroup_headroom(), _rlimit_headroom()) if h is not None]
    return min([available, *limits])


def _rlimit_headroom() -> int | None:
    """What this process may still allocate under its own address-space or data limit
    (`ulimit -v` / `-d`, or a parent's setrlimit), when one is set."""
    import resource

    import psutil

    usage = psutil.Process().memory_info()
    headrooms = []
    for limit_kind, used in ((resource.RLIMIT_AS, usage.vms), (resource.RLIMIT_DATA, usage.data)):
        soft, _hard = resource.getrlimit(limit_kind)
        if soft != resource.RLIM_INFINITY:
            headrooms.append(max(0, soft - used))
    return min(headrooms) if headrooms else None


def _cgroup_headroom() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), when a limit is set."""
    try:
        limit = (CGROUP_DIR / "memory.max").read_text().strip()
        current = int((CGROUP_DIR / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - current)


def budget_bytes(device: torch.device, shape: ModelShape, cap_gib: float | None = None) -> int:
    """Bytes a step's activations may take: a share of the free memory (at most `cap_gib`),
    less what the optimizer will allocate at its first step."""
    share = GPU_BUDGET_SHARE if device.type == "cuda" else CPU_BUDGET_SHARE
    free = int(free_memory_bytes(device) * share)
    if cap_gib is not None:
        free = min(free, int(cap_gib * 2**30))
    optimizer = shape.num_trainable * ADAM_BYTES_PER_TRAINABLE
    return max(0, free - optimizer)


def plan_stage(
    stage_cfg: StageConfig, cfg: TrainConfig, shape: ModelShape, budget: int
) -> StagePlan:
    """The chunking that keeps one micro-batch's activations within `budget` bytes.

    Worst case: every text padded to its length limit. Direct embedding keeps the queries' and
    the documents' activations together; GradCache keeps one chunk's.
    """
    max_query = cfg.embedder.max_query_length
    max_doc = cfg.embedder.max_doc_length
    rows = stage_cfg.batch_size
    docs = rows * (1 + stage_cfg.num_hard_negatives)
    direct = rows * shape.text_bytes(max_query) + docs * shape.text_bytes(max_doc)
    per_text = shape.text_bytes(max(max_query, max_doc))
    fits = int(budget // per_text) if per_text > 0 else rows + docs
    chunk = stage_cfg.cache_chunk_size
    if chunk is None and direct <= budget:
        return StagePlan(stage_cfg.stage, rows + docs, None, int(direct), budget)
    if fits < 1:
        raise MemoryBudgetError(
            f"stage {stage_cfg.stage}: one text of {max(max_query, max_doc)} tokens needs about "
            f"{_gib(per_text)} of activations, more than the {_gib(budget)} this device can "
            "give a step; lower --max-length"
            + (", raise --max-memory-gib" if cfg.max_memory_gib is not None else "")
            + ", or train on a device with more memory"
        )
    if chunk is not None and chunk > fits:
        raise MemoryBudgetError(
            f"stage {stage_cfg.stage}: a GradCache chunk of {chunk} texts needs about "
            f"{_gib(chunk * per_text)}, more than the {_gib(budget)} this device can give a "
            f"step; use --cache-chunk-size {fits} or less (or leave it out to choose it), or "
            "lower --max-length"
        )
    chosen = chunk or min(fits, rows + docs)
    return StagePlan(stage_cfg.stage, rows + docs, chosen, int(chosen * per_text), budget)


def fit_to_device(cfg: TrainConfig, embedder: Any, device: torch.device) -> TrainConfig:
    """`cfg` with GradCache turned on where a stage's micro-batch would not fit the device."""
    shape = ModelShape.of(embedder)
    budget = budget_bytes(device, shape, cfg.max_memory_gib)
    changes: dict[str, StageConfig] = {}
    for stage in cfg.stages:
        stage_cfg = cfg.stage_config(stage)
        plan = plan_stage(stage_cfg, cfg, shape, budget)
        logger.info(
            "stage %d: %d texts a micro-batch, %s, about %s of activations (budget %s on %s)",
            stage,
            plan.texts_per_micro_batch,
            f"GradCache chunks of {plan.chunk_size}" if plan.chunk_size else "no GradCache",
            _gib(plan.estimated_peak_bytes),
            _gib(budget),
            device,
        )
        if plan.chunk_size != stage_cfg.cache_chunk_size:
            logger.warning(
                "stage %d: %d texts a micro-batch do not fit %s free on %s: GradCache on, "
                "chunks of %d texts (same gradient, same effective batch; set "
                "--cache-chunk-size to choose)",
                stage,
                plan.texts_per_micro_batch,
                _gib(budget),
                device,
                plan.chunk_size,
            )
            changes[f"stage{stage}"] = dataclasses.replace(
                stage_cfg, cache_chunk_size=plan.chunk_size
            )
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f} GiB"
