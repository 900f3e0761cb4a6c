"""Real check of the trainer: packaged MiniLM trained on mined SciFact train data vs untrained.

    python -m bench.trainer_scifact --beir /work/shared/data/scifact --work /tmp/scifact-bench

1. sources stage (`pipeline.sources.run_sources`) -> SciFact train pairs and corpus shards;
2. the mining stage (`pipeline.mine.run_mine`, packaged MiniLM teacher, percpos:0.95) -> MINED;
   the template stage -> TRAIN shards;
3. the untrained MiniLM on the SciFact test split, without and with the SciFact instruction;
4. `model.trainer.train` (stage 1: LoRA + latent attention) for a few minutes;
5. the trained run on the test split with the instruction, at the same eval max length.

Prints a table and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data_quality import MINILM, student_config
from embedcurate.model.config import (
    BackboneConfig,
    EmbedderConfig,
    LatentAttentionConfig,
    LoraSettings,
    TrainConfig,
)
from embedcurate.model.embedder import build_embedder
from embedcurate.model.evaluate import corpus_texts, evaluate_beir, instruction_for
from embedcurate.model.io import load_embedder
from embedcurate.model.trainer import train
from embedcurate.pipeline.blend import parse_blend
from embedcurate.pipeline.sources.beir import load_beir
from embedcurate.pipeline.stages import run_stages

logger = logging.getLogger("bench.trainer_scifact")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_train_data(args: argparse.Namespace) -> Path:
    """SciFact train -> pairs and corpus -> the mining stage (MiniLM, percpos:0.95) -> TRAIN."""
    blend = parse_blend(
        {
            "name": "scifact-trainer-check",
            "description": "bench/trainer_scifact.py: mined with the mining stage",
            "sources": [
                {"name": "scifact", "kind": "beir", "path": str(args.beir), "task": "SciFact"}
            ],
            "teacher": {"dtype": "bfloat16"},  # 0.34x the peer's mining time at 0.96 overlap
            "mining": {"num_negatives": args.mined_negatives, "range_max": 50},
        }
    )
    _, reports = run_stages(blend, args.work, ["sources", "mine", "template"])
    report = reports["mine"]
    logger.info("mined %d rows (%s)", report.num_kept, dict(report.dropped))
    return args.work / "train"


def train_config(args: argparse.Namespace) -> TrainConfig:
    return student_config(
        args,
        steps=args.steps,
        hard_negatives=args.hard_negatives,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        checkpoint_every=max(1, args.steps // 2),
        log_every=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--mined-negatives", type=int, default=7)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--train-max-length", type=int, default=128)
    parser.add_argument("--eval-max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "load_average_start": load_average(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    instruction = instruction_for(args.beir)
    untrained = build_embedder(
        EmbedderConfig(
            backbone=BackboneConfig(MINILM),
            latent=LatentAttentionConfig(enabled=False),
            lora=LoraSettings(enabled=False),
            max_query_length=64,
            max_doc_length=args.eval_max_length,
        ),
        trainable=False,
    )
    cache = args.work / f"corpus-minilm-{args.eval_max_length}.npy"
    if not cache.is_file():
        _, doc_texts = corpus_texts(load_beir(args.beir, "test"))
        started = time.perf_counter()
        np.save(cache, untrained.encode_documents(doc_texts, progress=True))
        results["corpus_encode_seconds"] = time.perf_counter() - started
    doc_emb = np.load(cache, allow_pickle=False)
    train_dir = args.work / "train"
    if not (train_dir / "manifest.json").is_file():
        make_train_data(args)
    for name, chosen in (("untrained, no instruction", None), ("untrained", instruction)):
        scores = evaluate_beir(untrained, args.beir, instruction=chosen, doc_emb=doc_emb)
        results[name] = scores.to_dict()
        logger.info("%s: nDCG@10 %.4f", name, scores.ndcg_at_10)
    report = train(train_dir, args.work / "run", train_config(args))
    results["train"] = report.to_dict()
    results["load_average_after_training"] = load_average()
    trained = load_embedder(args.work / "run")
    trained.cfg = dataclasses.replace(
        trained.cfg, max_query_length=64, max_doc_length=args.eval_max_length
    )
    scores = evaluate_beir(trained, args.beir, instruction=instruction, progress=True)
    results["trained"] = scores.to_dict()
    results["load_average_end"] = load_average()
    (args.work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"SciFact test ({scores.num_queries} queries, {scores.num_docs} docs), exact search")
    print(f"{'model':<32} {'nDCG@10':>8} {'R@100':>8}")
    for name in ("untrained, no instruction", "untrained", "trained"):
        row = results[name]
        print(f"{name:<32} {row['ndcg_at_10']:>8.4f} {row['recall_at_100']:>8.4f}")
    stage = report.stages[0]
    print(
        f"training: {stage.steps} steps in {stage.seconds:.0f} s, {stage.tokens_per_second:.0f} "
        f"tokens/s, loss {stage.first_loss:.3f} -> {stage.last_loss:.3f}; load "
        f"{results['load_average_start']} -> {results['load_average_end']}"
    )


if __name__ == "__main__":
    main()
