"""`embedcurate card`: render, show, --json, --html, --plan, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from embedcurate.pipeline.blend import load_blend
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import write_shards
from testkit.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def make_run(root: Path) -> Path:
    """A run folder holding train shards written with the demo blend and a mining report."""
    blend = load_blend(REPO / "blends" / "demo.yaml")
    rows = [
        {
            "example_id": f"e{i}", "source": "beir-mini", "task_type": "retrieval",
            "task_name": "MSMARCO", "stage": 1, "instruction": "Find", "query": f"q{i % 4}",
            "query_instruction_chars": 0, "positive": f"passage {i}", "negatives": ["n1", "n2"],
            "doc_instruction_chars": 0, "pos_score": 0.5 + i / 100, "neg_scores": [0.4, 0.3],
        }
        for i in range(12)
    ]  # fmt: skip
    train_dir = root / "run" / "train"
    write_shards(
        rows_to_table(rows, TableKind.TRAIN), train_dir, TableKind.TRAIN, config=blend.portable()
    )
    report = StageReport(stage="mine")
    report.read("beir-mini", 14)
    report.keep("beir-mini", 12)
    report.drop("beir-mini", "too_few_negatives", 2)
    report.finish().save(root / "run" / "mined")
    return train_dir


def test_render_show_json_and_html(tmp_path: Path) -> None:
    train_dir = make_run(tmp_path)
    missing = run_cli("card", str(train_dir))
    assert missing.returncode == 1
    assert "no card here" in missing.stderr

    rendered = run_cli("card", str(train_dir), "--render")
    assert rendered.returncode == 0, rendered.stderr
    assert "12 rows (stage 1: 12)" in rendered.stdout
    assert "mined/report.json" in rendered.stdout  # the run folder was found from train/
    assert "too_few_negatives=2" in rendered.stdout

    as_json = run_cli("card", str(train_dir), "--json")
    assert as_json.returncode == 0, as_json.stderr
    card = json.loads(as_json.stdout)
    assert card == json.loads((train_dir / "card.json").read_text())
    assert card["name"] == "demo"
    assert card["figures"]["num_rows"] == 12
    assert card["figures"]["collisions"]["rows_duplicating_query"] == 12

    page = tmp_path / "out" / "card.html"
    html = run_cli("card", str(train_dir), "--html", str(page))
    assert html.returncode == 0, html.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert text.count('src="data:image/png;base64,') == len(card["plots"]) == 5
    assert 'src="plots/' not in text
    assert "<table>" in text


def test_plan_card_for_a_blend_that_cannot_run_here(tmp_path: Path) -> None:
    out = tmp_path / "nv"
    result = run_cli("card", str(out), "--plan", "--blend", "blends/nv-embed-v2.yaml")
    assert result.returncode == 0, result.stderr
    assert "planned, not run" in result.stdout
    readme = (out / "README.md").read_text()
    assert "**Not run.**" in readme
    assert "The blend needs network, gpu" in readme
    assert "mteb/msmarco" in readme
    no_blend = run_cli("card", str(out), "--plan")
    assert no_blend.returncode == 1
    assert "--plan needs --blend" in no_blend.stderr
