from __future__ import annotations

import json
from pathlib import Path

from embedcurate.pipeline.shards import read_shards, validate_shards
from testkit.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def make_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as corpus:
        for i in range(12):
            corpus.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"Abstract {i}."}) + "\n")
    with open(root / "queries.jsonl", "w") as queries:
        for i in range(4):
            queries.write(json.dumps({"_id": f"q{i}", "text": f"claim {i}"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q0\td5\t1", "q1\td1\t1", "q2\td2\t1"]
    (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_pairs_from_a_beir_folder_takes_the_task_from_its_name(tmp_path) -> None:
    folder = make_beir(tmp_path / "scifact")
    out = tmp_path / "out"
    result = run_cli("pairs", "--beir", str(folder), "--split", "train", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "SciFact" in result.stdout
    # the report names its folders relative to the run folder (--out), which it prints
    assert "scifact: pairs pairs/scifact" in result.stdout
    assert "corpus corpus/scifact" in result.stdout
    assert validate_shards(out / "pairs" / "scifact") == []
    rows = read_shards(out / "pairs" / "scifact", "pairs").to_pylist()
    assert len(rows) == 4
    assert {r["task_name"] for r in rows} == {"SciFact"}
    assert read_shards(out / "corpus" / "scifact", "corpus").num_rows == 12
    report = json.loads((out / "pairs" / "report.json").read_text())
    assert report["sources"]["scifact"]["num_kept"] == 4


def test_an_unknown_folder_name_asks_for_a_task_listing_the_known_ones(tmp_path) -> None:
    folder = make_beir(tmp_path / "my-data")
    out = tmp_path / "out"
    refused = run_cli("pairs", "--beir", str(folder), "--out", str(out))
    assert refused.returncode == 1
    assert "'my-data'" in refused.stderr
    assert "--task" in refused.stderr
    assert "MSMARCO" in refused.stderr
    named = run_cli("pairs", "--beir", str(folder), "--task", "nq", "--out", str(out))
    assert named.returncode == 0, named.stderr
    assert {r["task_name"] for r in read_shards(out / "pairs" / "my-data").to_pylist()} == {"NQ"}


def test_bad_input_stops_with_file_and_line_or_is_counted_with_on_error_drop(tmp_path) -> None:
    folder = make_beir(tmp_path / "scifact")
    with open(folder / "qrels" / "train.tsv", "a") as qrels:
        qrels.write("q3\tmissing-doc\t1\n")
    out = tmp_path / "out"
    stopped = run_cli("pairs", "--beir", str(folder), "--out", str(out))
    assert stopped.returncode == 1
    assert f"{folder / 'qrels' / 'train.tsv'}, line 6: unknown_document" in stopped.stderr
    dropped = run_cli("pairs", "--beir", str(folder), "--on-error", "drop", "--out", str(out))
    assert dropped.returncode == 0, dropped.stderr
    assert "unknown_document" in dropped.stdout
    assert len(read_shards(out / "pairs" / "scifact").to_pylist()) == 4


def test_pairs_from_the_demo_blend_writes_every_source(tmp_path) -> None:
    out = tmp_path / "out"
    result = run_cli("pairs", "--blend", "blends/demo.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("beir-mini", "topics", "sts"):
        assert validate_shards(out / "pairs" / name) == []
        assert name in result.stdout
    assert "below_sts_threshold" in result.stdout
    stages = {r["stage"] for r in read_shards(out / "pairs" / "topics").to_pylist()}
    assert stages == {2}


def test_pairs_needs_exactly_one_input(tmp_path) -> None:
    result = run_cli("pairs", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "exactly one of --beir" in result.stderr
