"""`embedcurate judge RUN_DIR` on a run the `mine` command wrote, with the LLM judge on a
scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from embedcurate.pipeline.shards import read_shards, validate_shards
from testkit.cli import run_cli
from testkit.llm_servers import ScriptedServer

TOPICS = ["glacier ice snow", "coffee caffeine sleep", "rocket orbit launch", "bread flour oven"]


def write_beir(folder: Path, num_docs: int = 24, num_queries: int = 6) -> Path:
    """A tiny BEIR set; every fifth document is marked RELEVANT (the scripted judge says yes)."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as corpus:
        for i in range(num_docs):
            marker = "RELEVANT " if i % 5 == 4 else ""
            text = f"{marker}{TOPICS[i % 4]} passage {i} about {TOPICS[(i + 1) % 4].split()[1]}"
            corpus.write(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as queries:
        for i in range(num_queries):
            queries.write(json.dumps({"_id": f"q{i}", "text": f"{TOPICS[i % 4]} {i}?"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(num_queries)]
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def mined_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    result = run_cli(
        "mine",
        "--beir",
        str(write_beir(tmp_path / "mini")),
        "--out",
        str(out),
        "--teacher",
        "hashing:64",
        "--num-negatives",
        "3",
        "--range-max",
        "10",
        "--rule",
        "none",
        "--on-too-few",
        "keep",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--instruction",
        "Given a question, retrieve passages that answer it",
    )
    assert result.returncode == 0, result.stderr
    return out


def judge_cli(run: Path, server: ScriptedServer, *options: str) -> tuple[int, str, str]:
    result = run_cli(
        "judge",
        str(run),
        "--backend",
        "openai",
        "--base-url",
        server.base_url,
        "--model",
        "scripted",
        "--cache-dir",
        str(run.parent / "llm-cache"),
        *options,
    )
    return result.returncode, result.stdout, result.stderr


def test_judge_relabels_rerenders_train_and_writes_the_card_section(tmp_path: Path) -> None:
    run = mined_run(tmp_path)
    mined = read_shards(run / "mined").to_pylist()
    marked = sum("RELEVANT" in t for r in mined for t in r["negatives"][:3])
    assert marked > 0  # the set has false negatives for the judge to find
    with ScriptedServer() as server:
        code, out, err = judge_cli(run, server, "--mode", "relabel", "--no-near-duplicates")
    assert code == 0, err
    assert "false-negative rate" in out
    assert validate_shards(run / "judged", "mined") == []
    assert validate_shards(run / "train", "train") == []
    report = json.loads((run / "judged" / "report.json").read_text())["details"]
    assert report["audit"]["overall"]["positive"] == marked
    train = read_shards(run / "train").to_pylist()
    assert not any("RELEVANT" in n for r in train for n in r["negatives"])
    extra = [p for r in train for p in (r["extra_positives"] or [])]
    assert len(extra) == marked
    assert all("RELEVANT" in p for p in extra)
    card = (run / "train" / "README.md").read_text()
    section = card.split("## False negatives", 1)[1].split("\n## ", 1)[0]
    assert "relabel" in section
    assert "judge_scores.png" in section
    assert (run / "train" / "plots" / "judge_scores.png").is_file()


def test_judge_refuses_bad_options_with_a_clear_error(tmp_path: Path) -> None:
    run = mined_run(tmp_path)
    with ScriptedServer() as server:
        code, _, err = judge_cli(run, server, "--sample", "100")
        assert code == 1
        assert "--sample" in err
        code, _, err = judge_cli(run, server, "--judge", "reranker")
        assert code == 1
        assert "cross-encoder:PATH" in err
        code, _, err = judge_cli(run, server, "--judge", f"cross-encoder:{tmp_path / 'none'}")
        assert code == 1
        assert "no model there" in err
    assert not (run / "judged" / "manifest.json").exists()
    code = run_cli("judge", str(tmp_path / "empty")).returncode
    assert code == 1
