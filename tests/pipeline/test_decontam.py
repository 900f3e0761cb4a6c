"""Decontamination against BEIR and text eval sets: exact and near duplicates, drop or keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from embedcurate.pipeline.blend import DecontaminateStageConfig, parse_blend
from embedcurate.pipeline.card.build import run_card
from embedcurate.pipeline.decontam import EvalIndex, run_decontaminate
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import read_manifest, read_shards, write_shards

RINGS = (
    "Saturn's rings are made almost entirely of water ice, with a small amount of rocky "
    "material and dust, spread in a disc that is hundreds of thousands of kilometres wide "
    "but only tens of metres thick"
)
TIDES = (
    "Ocean tides are caused mainly by the gravitational pull of the Moon on the oceans, with "
    "the Sun adding a smaller effect that makes spring and neap tides"
)
UNJUDGED = (
    "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the flour and "
    "release carbon dioxide that the gluten network traps"
)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def make_eval_sets(root: Path) -> None:
    beir = root / "eval-beir"
    _write_jsonl(
        beir / "corpus.jsonl",
        [
            {"_id": "d1", "title": "", "text": RINGS},
            {"_id": "d2", "title": "Tides", "text": TIDES},
            {"_id": "d3", "title": "", "text": UNJUDGED},  # in the corpus, judged by no query
        ],
    )
    _write_jsonl(
        beir / "queries.jsonl",
        [
            {"_id": "q1", "text": "what are saturn's rings made of"},
            {"_id": "q2", "text": "what causes the tides in the ocean"},
            {"_id": "q3", "text": "a query the test split does not judge"},
        ],
    )
    (beir / "qrels").mkdir()
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    (root / "heldout.txt").write_text(
        "The capital of Australia is Canberra, not Sydney.\n\nA second held-out sentence.\n",
        encoding="utf-8",
    )


def blend(root: Path, *, drop: bool = True, eval_sets: bool = True) -> Any:
    decontamination = {
        "drop": drop,
        "eval_sets": [
            {"name": "beir-test", "kind": "beir", "path": "eval-beir", "split": "test"},
            {"name": "heldout", "kind": "text", "path": "heldout.txt"},
        ]
        if eval_sets
        else [],
    }
    data = {
        "name": "decon",
        "sources": [{"name": "web", "kind": "hf", "hub_id": "org/web"}],
        "decontamination": decontamination,
        "output": {"rows_per_shard": 3},
    }
    return parse_blend(data, base_dir=root)


def _row(i: int, source: str, query: str, positive: str) -> dict[str, Any]:
    return {
        "example_id": f"{source}-{i}", "source": source, "task_type": "retrieval",
        "task_name": "Web", "stage": 1, "instruction": "Retrieve", "query": query,
        "positive": positive, "positive_ids": [f"p{i}"], "symmetric": False,
    }  # fmt: skip


WEB_ROWS = [
    # exact: the eval query q1, differing only in case and punctuation
    _row(0, "web", "What ARE Saturn's rings made of??", "Rings of ice orbit the planet."),
    # near: eval document d1 with its last word changed
    _row(1, "web", "saturn ring composition", RINGS.replace("thick", "deep")),
    # clean: a document of the eval corpus that no eval query judges
    _row(2, "web", "how does sourdough rise", UNJUDGED),
    _row(3, "web", "best time to plant tomatoes", "Plant tomatoes after the last frost."),
    # exact: a line of the text eval set, as the positive
    _row(4, "web", "capital of australia", "the capital of australia is canberra not sydney"),
    # near: eval document d2 (title and text) quoted inside a longer training document
    _row(5, "web", "tides explained", f"From an encyclopedia: Tides {TIDES}. See also: Moon."),
    _row(6, "web", "why is the sky blue", "Rayleigh scattering makes the sky look blue."),
]
SYNTHETIC_ROWS = [
    _row(0, "synthetic", "What causes the tides in the ocean?", "The Moon pulls the water."),
    _row(1, "synthetic", "what is a black hole", "A region where gravity traps light."),
]


def make_pairs(root: Path) -> list[Path]:
    dirs = []
    for name, rows in (("web", WEB_ROWS), ("synthetic", SYNTHETIC_ROWS)):
        out = root / "run" / "pairs" / name
        write_shards(rows_to_table(rows, TableKind.PAIRS), out, TableKind.PAIRS, rows_per_shard=2)
        dirs.append(out)
    return dirs


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[Path]]:
    make_eval_sets(tmp_path)
    return tmp_path, make_pairs(tmp_path)


def test_drops_exact_and_near_duplicates_and_counts_them(setup) -> None:
    root, pairs_dirs = setup
    out = root / "run" / "clean"
    report = run_decontaminate(pairs_dirs, out, DecontaminateStageConfig.of(blend(root)))

    kept_web = read_shards(out / "web", TableKind.PAIRS)["example_id"].to_pylist()
    assert kept_web == ["web-2", "web-3", "web-6"]
    kept_synthetic = read_shards(out / "synthetic", TableKind.PAIRS)["example_id"].to_pylist()
    assert kept_synthetic == ["synthetic-1"]

    web = report.sources["web"]
    assert (web.num_in, web.num_kept) == (7, 3)
    assert dict(web.dropped) == {"eval_exact_duplicate": 2, "eval_near_duplicate": 2}
    assert dict(report.sources["synthetic"].dropped) == {"eval_exact_duplicate": 1}

    details = report.details
    assert details["eval_sets"]["beir-test"] == {
        "kind": "beir", "split": "test", "num_queries": 2, "num_documents": 2, "num_texts": 4,
    }  # fmt: skip
    assert details["eval_sets"]["heldout"]["num_texts"] == 2
    assert details["flagged"]["web"] == {
        "beir-test": {"rows": 3, "exact": 1, "near": 2, "query": 1, "positive": 2},
        "heldout": {"rows": 1, "exact": 1, "near": 0, "query": 0, "positive": 1},
    }
    assert details["flagged"]["synthetic"] == {
        "beir-test": {"rows": 1, "exact": 1, "near": 0, "query": 1, "positive": 0}
    }
    assert details["flagged_rows"] == {
        "web": {"rows": 4, "exact": 2, "near": 2},
        "synthetic": {"rows": 1, "exact": 1, "near": 0},
    }
    assert details["outputs"] == {
        "web": {"num_in": 7, "num_out": 3},
        "synthetic": {"num_in": 2, "num_out": 1},
    }
    saved = json.loads((out / "report.json").read_text())
    assert saved["dropped"] == {"eval_exact_duplicate": 3, "eval_near_duplicate": 2}


def test_keep_mode_counts_the_same_rows_but_drops_none(setup) -> None:
    root, pairs_dirs = setup
    out = root / "run" / "clean"
    report = run_decontaminate(
        pairs_dirs, out, DecontaminateStageConfig.of(blend(root, drop=False))
    )
    assert read_manifest(out / "web").num_rows == 7
    assert report.num_kept == report.num_in == 9
    assert sum(report.dropped.values()) == 0
    assert report.details["flagged_rows"]["web"] == {"rows": 4, "exact": 2, "near": 2}


def test_output_is_idempotent_and_equals_input_without_eval_sets(setup) -> None:
    root, pairs_dirs = setup
    out = root / "run" / "clean"
    first = run_decontaminate(pairs_dirs, out, DecontaminateStageConfig.of(blend(root)))
    hashes = [e.sha256 for e in read_manifest(out / "web").shards]
    second = run_decontaminate(pairs_dirs, out, DecontaminateStageConfig.of(blend(root)))
    assert [e.sha256 for e in read_manifest(out / "web").shards] == hashes
    assert first.to_dict()["sources"] == second.to_dict()["sources"]

    passthrough = run_decontaminate(
        pairs_dirs, root / "copy", DecontaminateStageConfig.of(blend(root, eval_sets=False))
    )
    assert passthrough.num_kept == passthrough.num_in == 9
    original = pl.from_arrow(read_shards(pairs_dirs[0]))
    copied = pl.from_arrow(read_shards(root / "copy" / "web"))
    assert copied.equals(original)


def test_near_duplicate_uses_overlap_of_the_smaller_ngram_set() -> None:
    index = EvalIndex(ngram=2, overlap_threshold=0.5)
    index.add_texts("e", ["a b c d e"])  # 2-grams: ab bc cd de
    assert index.match("a b c x y z") == {"e": "near"}  # shares ab bc: 2 / min(4, 5) = 0.5
    assert index.match("a b x y z w") == {}  # shares ab: 1 / 4
    assert index.match("A, b; c. d e!") == {"e": "exact"}
    assert index.match("q a b c d e r") == {"e": "near"}  # contains the eval text: 4 / 4


def test_card_reports_decontamination_per_source_and_eval_set(setup) -> None:
    root, pairs_dirs = setup
    cfg = blend(root)
    report = run_decontaminate(pairs_dirs, root / "run" / "clean", DecontaminateStageConfig.of(cfg))
    run_card(root / "run" / "clean" / "web", root / "run", cfg)
    card = json.loads((root / "run" / "clean" / "web" / "card.json").read_text())
    section = card["decontamination"]
    assert section["status"] == "ran"
    assert section["reports"][0]["flagged"] == report.details["flagged"]
    readme = (root / "run" / "clean" / "web" / "README.md").read_text()
    assert "| web | beir-test | 3 | 1 | 2 | 1 | 2 |" in readme
    assert "| web | heldout | 1 | 1 | 0 | 0 | 1 |" in readme
