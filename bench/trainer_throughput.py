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
"""

from __future__ import annotations

import argparse
import time

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


def mistral_config(args: argparse.Namespace) -> MistralConfig:
    if args.tiny:
        sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        sizes |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
    else:  # Mistral-7B
        sizes = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32}
        sizes |= {"num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000}
    return MistralConfig(**sizes, max_position_embeddings=4096, sliding_window=None)


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
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    config = mistral_config(args)
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
    optimizer = torch.optim.AdamW(embedder.trainable_parameters(), lr=1e-5)
    loss_fn = InfoNCELoss(0.01)
    num_docs = args.batch * (1 + args.negatives)
    owner = torch.arange(args.batch, device=device).repeat_interleave(1 + args.negatives)
    positive = torch.arange(args.batch, device=device) * (1 + args.negatives)

    def step() -> None:
        texts = args.batch + num_docs
        ids = torch.randint(100, config.vocab_size, (texts, args.seq), device=device)
        mask = torch.ones_like(ids)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            emb = embedder(ids, mask, mask)  # (texts, hidden)
            out = loss_fn(emb[: args.batch], emb[args.batch :], owner, positive, in_batch=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    tokens = (args.batch + num_docs) * args.seq
    n = sum(p.numel() for name, p in backbone.named_parameters() if "embed_tokens" not in name)
    layers, d, s = config.num_hidden_layers, config.hidden_size, args.seq
    flops_per_token = 4 * n + 12 * layers * d * s
    achieved = flops_per_token * tokens / seconds
    print(f"device {torch.cuda.get_device_name() if gpu else 'cpu'}; backbone {n / 1e9:.2f} B")
    print(f"step {seconds * 1000:.0f} ms, {tokens / seconds:,.0f} tokens/s")
    print(
        f"model FLOPs {achieved / 1e12:.1f} TFLOP/s, MFU {achieved / (args.peak_tflops * 1e12):.1%}"
    )
    if gpu:
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
