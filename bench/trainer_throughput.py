"""Training throughput and model FLOPs utilisation of the embedder on a Mistral-structured model.

    python -m bench.trainer_throughput                     # Mistral-7B shape, needs a GPU
    python -m bench.trainer_throughput --tiny --device cpu # a 2-layer check of the script

Random weights (speed does not depend on them), bidirectional Mistral + LoRA (r 16 on every
linear layer) + latent attention, InfoNCE over in-batch and hard negatives, AdamW; bf16
autocast and gradient checkpointing on GPU, as the trainer runs them. Each step embeds
`batch` queries and `batch x (1 + negatives)` documents of `seq` tokens.

Model FLOPs per token for LoRA training on a frozen backbone (N = backbone parameters outside
the embeddings, L layers, d hidden size, s sequence length):

    forward 2N + 4·L·d·s (attention scores and mix) + backward for activations only
    2N + 8·L·d·s (no weight gradients for frozen weights)  =  4N + 12·L·d·s

MFU = achieved model FLOPs per second / the device's peak (--peak-tflops; 989 for an H100
SXM's dense bf16). Gradient checkpointing's recomputed forward is not counted (as usual for
MFU), so hardware utilisation is higher than the MFU printed.

`bench/gpu_check.py` runs the same measurement (`measure_throughput`) as one of its sections.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from transformers import AutoModel, MistralConfig

from embedcurate.model.bidirectional import AttentionMode
from embedcurate.model.config import (
    BackboneConfig,
    EmbedderConfig,
    LatentAttentionConfig,
    LoraSettings,
)
from embedcurate.model.embedder import Embedder, apply_lora
from embedcurate.model.losses import InfoNCELoss

MISTRAL_7B_SIZES = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
}
TINY_MISTRAL_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}


def mistral_config(tiny: bool, **overrides: int) -> MistralConfig:
    """Mistral-7B's shape (or a 2-layer, 64-wide one), full attention, 4096 positions."""
    sizes = (TINY_MISTRAL_SIZES if tiny else MISTRAL_7B_SIZES) | overrides
    return MistralConfig(**sizes, max_position_embeddings=4096, sliding_window=None)


@dataclass(frozen=True)
class ThroughputResult:
    device_name: str
    backbone_params: int  # outside the embeddings (LoRA adapters included)
    seconds_per_step: float
    tokens_per_second: float
    model_tflops: float  # achieved model FLOPs per second / 1e12
    mfu: float  # model_tflops / the peak given
    peak_memory_gib: float | None  # torch.cuda.max_memory_allocated; None on CPU


def build_random_embedder(config: MistralConfig, device: torch.device) -> Embedder:
    """Random-weight bidirectional backbone + LoRA + latent attention, as the trainer builds it."""
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    with device:
        backbone = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if gpu:
        backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    cfg = EmbedderConfig(
        backbone=BackboneConfig("random-mistral"),
        latent=LatentAttentionConfig(),
        lora=LoraSettings(),
    )
    embedder = Embedder(
        apply_lora(backbone, cfg.lora), None, AttentionMode.PADDING_4D, config.hidden_size, cfg
    )  # type: ignore[arg-type]  # no tokenizer: ids are random
    embedder.latent.to(device)  # type: ignore[union-attr]
    return embedder


def measure_throughput(
    config: MistralConfig,
    device: torch.device,
    *,
    batch: int,
    negatives: int,
    seq: int,
    steps: int,
    warmup: int,
    peak_tflops: float,
) -> ThroughputResult:
    """Time `steps` optimizer steps (after `warmup`) of InfoNCE training on random token ids."""
    gpu = device.type == "cuda"
    embedder = build_random_embedder(config, device)
    optimizer = torch.optim.AdamW(embedder.trainable_parameters(), lr=1e-5)
    loss_fn = InfoNCELoss(0.01)
    num_docs = batch * (1 + negatives)
    owner = torch.arange(batch, device=device).repeat_interleave(1 + negatives)
    positive = torch.arange(batch, device=device) * (1 + negatives)

    def step() -> None:
        texts = batch + num_docs
        ids = torch.randint(100, config.vocab_size, (texts, seq), device=device)
        mask = torch.ones_like(ids)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            emb = embedder(ids, mask, mask)  # (texts, hidden)
            out = loss_fn(emb[:batch], emb[batch:], owner, positive, in_batch=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    tokens = (batch + num_docs) * seq
    backbone = embedder.backbone
    n = sum(p.numel() for name, p in backbone.named_parameters() if "embed_tokens" not in name)
    layers, d = config.num_hidden_layers, config.hidden_size
    flops_per_token = 4 * n + 12 * layers * d * seq
    achieved = flops_per_token * tokens / seconds
    return ThroughputResult(
        device_name=torch.cuda.get_device_name(device) if gpu else "cpu",
        backbone_params=n,
        seconds_per_step=seconds,
        tokens_per_second=tokens / seconds,
        model_tflops=achieved / 1e12,
        mfu=achieved / (peak_tflops * 1e12),
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8, help="queries per step")
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    result = measure_throughput(
        mistral_config(args.tiny),
        torch.device(args.device),
        batch=args.batch,
        negatives=args.negatives,
        seq=args.seq,
        steps=args.steps,
        warmup=args.warmup,
        peak_tflops=args.peak_tflops,
    )
    print(f"device {result.device_name}; backbone {result.backbone_params / 1e9:.2f} B")
    print(f"step {result.seconds_per_step * 1000:.0f} ms, {result.tokens_per_second:,.0f} tokens/s")
    print(f"model FLOPs {result.model_tflops:.1f} TFLOP/s, MFU {result.mfu:.1%}")
    if result.peak_memory_gib is not None:
        print(f"peak memory {result.peak_memory_gib:.1f} GiB")


if __name__ == "__main__":
    main()
