"""bench/gpu_check.py on the CPU path CI covers: tiny shapes through the same code as on a GPU.

The GPU run itself needs a GPU (see bench/RESULTS.md); here every section must run our code
end to end and report numbers, and a section over its budget must become a row of the table
instead of ending the run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
SECTIONS = [
    "matmul",
    "teacher_encoder",
    "teacher_decoder",
    "teacher_replicas",
    "faiss_index",
    "trainer",
    "trainer_ddp",
    "trainer_fsdp",
]
GPU_ONLY = {"trainer_fsdp"}  # accelerate runs no FSDP on a CPU-only machine


def run_check(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "check.json"
    scratch = tmp_path / "tmp"  # torchrun's logs and any temporary file stay in tmp_path
    scratch.mkdir(exist_ok=True)
    env = os.environ | {"TMPDIR": str(scratch), "EMBEDCURATE_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), *options]
    command += ["--work-dir", str(tmp_path / "work")]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    return done, out


def positive(figures: dict[str, Any], *names: str) -> None:
    for name in names:
        value = figures[name]
        assert isinstance(value, int | float), f"{name} is {value!r}"
        assert math.isfinite(value), f"{name} is {value}"
        assert value > 0, f"{name} is {value}"


@pytest.mark.slow
def test_tiny_run_reports_every_section_with_numbers(tmp_path: Path) -> None:
    done, out = run_check(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["tiny"] is True
    assert report["device"].startswith("cpu")
    rows = {section["name"]: section for section in report["sections"]}
    assert list(rows) == SECTIONS
    for name, row in rows.items():
        if name in GPU_ONLY:
            assert row["status"] == "skipped"
            assert "needs a GPU" in row["error"]
            continue
        assert row["status"] == "ok", (name, row["error"])
        assert 0 < row["seconds"] <= row["budget_s"]
        assert f"| {name} | ok |" in done.stdout  # the printed markdown table has its row

    positive(rows["matmul"]["figures"], "bf16_tflops", "fp32_tflops")
    for teacher in ("teacher_encoder", "teacher_decoder"):
        figures = rows[teacher]["figures"]
        positive(figures, "texts_per_s", "tokens_per_s", "eff_tflops", "vs_measured_peak")
        assert figures["devices"] == "cpu"
        assert figures["texts"] > 0
    replicas = rows["teacher_replicas"]["figures"]
    positive(replicas, "one_replica_texts_per_s", "two_replicas_texts_per_s")
    assert replicas["max_abs_diff"] == 0.0  # same batches, same weights: the same embeddings
    index = rows["faiss_index"]["figures"]
    assert index["flat_recall_at_k"] >= 0.99  # exact search agrees with exact search
    assert 0 < index["ivf_recall_at_k"] <= 1
    positive(rows["trainer"]["figures"], "tokens_per_s", "model_tflops", "mfu")

    ddp = rows["trainer_ddp"]["figures"]
    assert ddp["distributed_type"] == "MULTI_CPU"  # accelerate took its distributed path
    assert ddp["backend"] == "gloo"
    assert ddp["world_size"] == 1
    assert ddp["accum_steps"] == ddp["gradcache_steps"] == 2
    assert ddp["checkpoints"] == 2  # the last checkpoint of each stage
    positive(ddp, "accum_first_loss", "gradcache_last_loss", "accum_tokens_per_s")


def test_a_section_over_its_budget_is_a_timeout_row_not_a_crash(tmp_path: Path) -> None:
    # building even the tiny trainer takes far longer than 1% of its 60 s budget
    done, out = run_check(tmp_path, "--sections", "trainer", "--budget-scale", "0.001")
    assert done.returncode == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    (row,) = report["sections"]
    assert row["name"] == "trainer"
    assert row["status"] == "timeout"
    assert "budget" in row["error"]
    assert "| trainer | timeout |" in done.stdout


def test_sections_past_the_total_budget_are_reported_as_not_run(tmp_path: Path) -> None:
    done, out = run_check(tmp_path, "--sections", "matmul,trainer", "--total-budget-s", "0.5")
    assert done.returncode == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [(row["name"], row["status"]) for row in report["sections"]] == [
        ("matmul", "not run"),
        ("trainer", "not run"),
    ]
    assert "--total-budget-s" in report["sections"][0]["error"]


def test_an_unknown_section_is_named_with_the_choices(tmp_path: Path) -> None:
    done, out = run_check(tmp_path, "--sections", "matmul,teachers")
    assert done.returncode != 0
    assert "--sections: unknown teachers" in done.stderr
    assert "teacher_encoder" in done.stderr
    assert not out.exists()
