"""Trainer step time on CPU in fp32 and under bf16 autocast, on the data-quality student.

    python -m bench.trainer_precision --beir /work/shared/data/scifact --work /tmp/tp \\
        [--precisions fp32,bf16] [--rounds 2] [--steps 3] [--threads 2] [--cache-chunk-size 32]

The student and its step are `bench/data_quality.py`'s (packaged MiniLM, LoRA + latent
attention, stage 1, 32 rows + 1 hard negative a step, 64/128 tokens, its learning rate and
warmup); only `precision` differs between runs. The train set is built once in WORK from real
SciFact train rows: the templated query, its first labelled positive, and a seeded random
corpus document as the hard negative (step time does not depend on how hard it is).

Each run is its own process, so each gets a fresh accelerate state and its own peak RSS.
Precisions are interleaved (fp32, bf16, fp32, bf16, ...) so that a shared machine's load falls
on both. Step times are the trainer's own (`seconds` and `cpu_seconds` in `train_log.jsonl`:
embedding, GradCache backward, optimizer; no loading or checkpointing); on a shared machine
the CPU seconds, which other jobs do not stretch, are the fairer comparison. Every run starts
from the same seed and the same batches, so their step-1 losses are comparable. Prints a table
and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.data_quality import arms, build_parser, train_config
from bench.gpu_check import die_with_parent
from embedcurate.model.config import TrainConfig
from embedcurate.model.evaluate import corpus_texts, instruction_for
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import is_complete, read_manifest, write_shards
from embedcurate.pipeline.sources.beir import load_beir

NUM_ROWS = 320  # ten steps of 32 rows: more than a run takes


def make_train_shards(beir: Path, work: Path) -> Path:
    """TRAIN shards from SciFact train: templated query, first positive, one random negative."""
    out_dir = work / "train"
    if is_complete(out_dir):
        return out_dir
    folder = load_beir(beir, "train")
    doc_ids, doc_texts = corpus_texts(folder)
    text_of = dict(zip(doc_ids, doc_texts, strict=True))
    instruction = instruction_for(beir)
    prefix = f"Instruct: {instruction}\nQuery: "
    rng = random.Random(0)
    rows = []
    for index, (query_id, positives) in enumerate(list(folder.qrels.items())[:NUM_ROWS]):
        negative = rng.choice([d for d in doc_ids if d not in positives])
        rows.append(
            {
                "example_id": f"scifact-train-{query_id}",
                "source": "scifact",
                "task_type": "retrieval",
                "task_name": "SciFact",
                "stage": 1,
                "instruction": instruction,
                "query": prefix + folder.queries[query_id],
                "query_instruction_chars": len(prefix),
                "positive": text_of[next(iter(positives))],
                "negatives": [text_of[negative]],
                "doc_instruction_chars": 0,
                "neg_scores": [0.0],
                "mining_rule": f"random (bench/trainer_precision.py, row {index})",
            }
        )
    write_shards(rows_to_table(rows, TableKind.TRAIN), out_dir, TableKind.TRAIN)
    return out_dir


def student_config(args: argparse.Namespace, precision: str) -> TrainConfig:
    """data_quality's `percpos` arm at seed 0 for --steps steps, in `precision`."""
    dq_args = build_parser().parse_args(["--beir", str(args.beir), "--work", str(args.work)])
    dq_args.steps = args.steps
    cfg = train_config(dq_args, arms(dq_args)["percpos"], seed=0, num_rows=NUM_ROWS)
    stage1 = dataclasses.replace(cfg.stage1, cache_chunk_size=args.cache_chunk_size)
    return dataclasses.replace(cfg, stage1=stage1, precision=precision, progress=False)  # type: ignore[arg-type]


def run_one(args: argparse.Namespace) -> None:
    """The child: train one run, then write its step log, peak RSS and resolved config."""
    import torch

    from embedcurate.model.trainer import LOG_FILE, train

    torch.set_num_threads(args.threads)
    run_dir = Path(args.child)
    cfg = student_config(args, args.child_precision)
    train(args.work / "train", run_dir, cfg)
    log = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]
    recorded = json.loads((run_dir / "train_config.json").read_text())["config"]
    result = {
        "precision": args.child_precision,
        "recorded_precision": recorded["precision"],
        "cache_chunk_size": recorded["stage1"]["cache_chunk_size"],
        "seconds": [r["seconds"] for r in log],
        "cpu_seconds": [r["cpu_seconds"] for r in log],
        "losses": [r["loss"] for r in log],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))


def launch(args: argparse.Namespace, precision: str, number: int) -> dict[str, Any]:
    """One run in a child process that dies with us; returns its result.json."""
    run_dir = args.work / "runs" / f"{number:02d}-{precision}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run folder left from before would resume, not train
    command = [
        sys.executable, "-m", "bench.trainer_precision",
        "--beir", str(args.beir), "--work", str(args.work),
        "--steps", str(args.steps), "--threads", str(args.threads),
        "--cache-chunk-size", str(args.cache_chunk_size),
        "--child", str(run_dir), "--child-precision", precision,
    ]  # fmt: skip
    subprocess.run(command, check=True, preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    return json.loads((run_dir / "result.json").read_text())


def summarise(results: list[dict[str, Any]], precisions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for precision in precisions:
        runs = [r for r in results if r["precision"] == precision]
        seconds = [s for r in runs for s in r["seconds"]]
        rows.append(
            {
                "precision": precision,
                "median_s": statistics.median(seconds),
                "median_cpu_s": statistics.median(s for r in runs for s in r["cpu_seconds"]),
                "steps": len(seconds),
                "step1_losses": [round(r["losses"][0], 4) for r in runs],
                "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Medians over all steps of all runs; speed-ups against the first precision."""
    wall, cpu = rows[0]["median_s"], rows[0]["median_cpu_s"]
    print(
        f"{'precision':<10} {'s/step':>7} {'x':>6} {'CPU s/step':>11} {'x':>6} {'steps':>6} "
        f"{'peak RSS':>9}  step-1 losses"
    )
    for r in rows:
        losses = ", ".join(f"{x:.4f}" for x in r["step1_losses"])
        print(
            f"{r['precision']:<10} {r['median_s']:>7.1f} {wall / r['median_s']:>5.2f}x "
            f"{r['median_cpu_s']:>11.1f} {cpu / r['median_cpu_s']:>5.2f}x {r['steps']:>6} "
            f"{r['peak_rss_gib']:>7.2f} G  {losses}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each precision")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps a run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache-chunk-size", type=int, default=32, help="GradCache chunk, the same for all runs"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-precision", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        run_one(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    make_train_shards(args.beir, args.work)
    print(f"train rows: {read_manifest(args.work / 'train').num_rows}", flush=True)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    order = [p for _ in range(args.rounds) for p in precisions]  # interleaved
    results = []
    for number, precision in enumerate(order):
        results.append(launch(args, precision, number))
        print(json.dumps(results[-1]), flush=True)
    rows = summarise(results, precisions)
    payload = {
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": results,
        "summary": rows,
    }
    (args.work / "results.json").write_text(json.dumps(payload, indent=2))
    print_table(rows)


if __name__ == "__main__":
    main()
