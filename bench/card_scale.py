"""How the data card and decontamination scale: wall time and peak RSS on generated shards.

    python bench/card_scale.py --rows 200000 [--eval-beir ../shared/data/scifact] [--work DIR]

Generates a TRAIN set and a PAIRS set of `--rows` rows (random words, 7 negatives per train
row), then times `run_card` over the TRAIN set and `run_decontaminate` over the PAIRS set
against a BEIR eval folder (test split), each in a fresh process so peak RSS is its own.
Prints one table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import ShardWriter

REPO = Path(__file__).resolve().parents[1]

VOCAB = [f"w{i}" for i in range(30_000)]
INSTRUCTION = "Instruct: Given a question, retrieve passages that answer it\nQuery: "


def _text(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(VOCAB[i] for i in rng.integers(0, len(VOCAB), rng.integers(low, high)))


def generate(out: Path, num_rows: int, rows_per_shard: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with (
        ShardWriter(out / "train", TableKind.TRAIN, rows_per_shard=rows_per_shard) as train,
        ShardWriter(out / "pairs" / "web", TableKind.PAIRS, rows_per_shard=rows_per_shard) as pairs,
    ):
        for start in range(0, num_rows, rows_per_shard):
            train_rows, pair_rows = [], []
            for i in range(start, min(start + rows_per_shard, num_rows)):
                query, positive = _text(rng, 4, 16), _text(rng, 30, 90)
                stage = 1 if i % 5 else 2
                pos_score = float(rng.uniform(0.5, 0.9))
                train_rows.append(
                    {
                        "example_id": f"e{i}", "source": f"s{i % 7}", "stage": stage,
                        "task_type": "retrieval" if stage == 1 else "classification",
                        "task_name": "Bench", "instruction": "Given a question",
                        "query": INSTRUCTION + query, "query_instruction_chars": len(INSTRUCTION),
                        "positive": positive, "negatives": [_text(rng, 30, 90) for _ in range(7)],
                        "doc_instruction_chars": 0, "pos_score": pos_score,
                        "neg_scores": sorted(rng.uniform(0.1, pos_score, 7).tolist(), reverse=True),
                        "label": f"l{i % 12}" if stage == 2 else None, "teacher": "bench",
                        "mining_rule": "percpos:0.95",
                    }
                )  # fmt: skip
                pair_rows.append(
                    {
                        "example_id": f"p{i}", "source": "web", "task_type": "retrieval",
                        "task_name": "Bench", "stage": 1, "instruction": "Given a question",
                        "query": query, "positive": positive, "positive_ids": [f"d{i}"],
                        "symmetric": False,
                    }
                )  # fmt: skip
            train.write(rows_to_table(train_rows, TableKind.TRAIN))
            pairs.write(rows_to_table(pair_rows, TableKind.PAIRS))


CARD_CODE = """
from embedcurate.pipeline.card.build import run_card
run_card({train!r}, {train!r}, None)
"""
DECONTAM_CODE = """
from pathlib import Path
from embedcurate.pipeline.blend import DecontaminateStageConfig, parse_blend
from embedcurate.pipeline.decontam import run_decontaminate

REPO = Path(__file__).resolve().parents[1]
blend = parse_blend({{"name": "bench", "sources": [{{"name": "web", "kind": "hf", "hub_id": "x"}}],
    "decontamination": {{"eval_sets": [{{"name": "eval", "kind": "beir", "path": {beir!r}}}]}}}})
report = run_decontaminate([Path({pairs!r})], Path({out!r}), DecontaminateStageConfig.of(blend))
print(report.details["eval_sets"], report.num_in, sum(report.dropped.values()))
"""


def timed(code: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB, stdout) of `code` run in a fresh interpreter."""
    probe = (
        "\nimport resource\n"
        "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code + probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    wall = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    peak_kib = int(lines[-1].split()[1])
    return wall, peak_kib / 2**20, "\n".join(lines[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-shard", type=int, default=20_000)
    parser.add_argument(
        "--eval-beir", type=Path, default=Path("../shared/data/scifact"), help="BEIR eval folder"
    )
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="card-bench-"))
    start = time.perf_counter()
    generate(work, args.rows, args.rows_per_shard)
    print(f"generated {args.rows:,} train and pairs rows in {time.perf_counter() - start:.0f} s")
    rows = []
    wall, rss, _ = timed(CARD_CODE.format(train=str(work / "train")))
    card = json.loads((work / "train" / "card.json").read_text())
    rows.append(("run_card", wall, rss, card["figures"]["num_rows"]))
    code = DECONTAM_CODE.format(
        beir=str(args.eval_beir.resolve()), pairs=str(work / "pairs" / "web"),
        out=str(work / "clean"),
    )  # fmt: skip
    wall, rss, out = timed(code)
    print(out)
    rows.append(("run_decontaminate", wall, rss, args.rows))
    print("\n| stage | rows | wall s | rows/s | peak RSS GiB |\n|---|---|---|---|---|")
    for name, wall, rss, n in rows:
        print(f"| {name} | {n:,} | {wall:.1f} | {n / wall:,.0f} | {rss:.2f} |")


if __name__ == "__main__":
    main()
