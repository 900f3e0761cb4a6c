"""The encode plan and its parts: the same groups of texts wherever and in whatever order the
parts run, so a distributed mine stage writes what the in-process one writes, bit for bit."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedcurate.pipeline.blend import MineStageConfig, parse_blend
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.fan_out import PLANS_DIR
from embedcurate.pipeline.manifest import read_manifest
from embedcurate.pipeline.mining import embed_cache
from embedcurate.pipeline.mining.embed_cache import ENCODE_PART, EmbeddingCache, text_keys
from embedcurate.pipeline.mining.encode_plan import EncodePlan, group_size
from embedcurate.pipeline.mining.shard_encode import encode_part, write_plan
from embedcurate.pipeline.mining.stage import MineInputs, run_mine
from embedcurate.pipeline.mining.teacher import HFTeacher, release_shared_teacher
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import write_shards
from embedcurate.pipeline.stages import StageContext, get_stage
from testkit.rows import make_pair_row

WORDS = ("planet", "orbit", "telescope", "comet", "galaxy", "star", "moon", "eclipse", "nebula")
NUM_DOCS = 200
PART = 32  # texts per part, and per call to the teacher (a group)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer decoder with random weights: its embeddings, like a real teacher's, differ in
    the last bits with the batch a text is padded in."""
    from testkit.tiny import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def mine_config(
    model: str, cache_dir: Path, part_size: int = PART, **teacher: Any
) -> MineStageConfig:
    blend = parse_blend(
        {
            "name": "t",
            "sources": [{"name": "unit", "kind": "jsonl", "path": "unused.jsonl"}],
            "teacher": {
                "model": model,
                "pooling": "last",
                "batch_size": 8,
                "cache_dir": str(cache_dir),
                **teacher,
            },
            "mining": {"num_negatives": 3, "range_max": 10, "encode_part_size": part_size},
            "output": {"rows_per_shard": 16},
        },
        check_paths=False,
    )
    return MineStageConfig.of(blend)


def write_mine_case(root: Path, num_docs: int = NUM_DOCS, max_words: int = 40) -> MineInputs:
    """Documents of 3 to 40 words, the last tenth repeating the first (encoded once), and a
    query for every fifth document."""
    rng = random.Random(0)
    num_unique = num_docs - num_docs // 10
    texts = [
        f"note {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, max_words)))
        for i in range(num_unique)
    ]
    texts += texts[: num_docs - num_unique]
    docs = [
        {"source": "unit", "doc_id": f"d{i}", "title": "", "text": text}
        for i, text in enumerate(texts)
    ]
    write_shards(rows_to_table(docs, TableKind.CORPUS), root / "corpus" / "unit", TableKind.CORPUS)
    rows = [
        make_pair_row(
            i, query=f"{WORDS[i % len(WORDS)]} {i}", positive_id=f"d{i}", positive=texts[i]
        )
        for i in range(0, num_docs, 5)
    ]
    write_shards(rows_to_table(rows, TableKind.PAIRS), root / "pairs" / "unit", TableKind.PAIRS)
    # folders named by source, as in a run folder (the stage registry keys corpora by name)
    return MineInputs([root / "pairs" / "unit"], {"unit": root / "corpus" / "unit"})


def cached_embeddings(cfg: MineStageConfig, texts: list[str]) -> np.ndarray:
    """(len(texts), dim) embeddings of texts as the cache of `cfg` holds them."""
    teacher = HFTeacher(cfg.teacher)
    cache = EmbeddingCache(cfg.teacher.cache_dir, teacher.fingerprint)
    keys = text_keys(texts)
    assert cache.find(keys).all()
    out = np.empty((len(texts), teacher.dimension), dtype=np.float32)
    cache.read(keys, out)
    return out


def shard_hashes(mined_dir: Path) -> list[str]:
    return [entry.sha256 for entry in read_manifest(mined_dir).shards]


def doc_texts(root: Path) -> list[str]:
    from embedcurate.pipeline.shards import read_shards

    return read_shards(root / "corpus" / "unit").column("text").to_pylist()


# -- the plan ----------------------------------------------------------------------------


def test_plan_lists_each_uncached_text_once_in_order_of_first_appearance(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "t")
    cache.write(text_keys(["cached"]), np.ones((1, 2), np.float32))
    pools = [["a", "b", "a", "cached", "c"], ["c", "d", "b", "e"], ["f"]]
    plan = EncodePlan(pools, cache, part_size=2)
    assert list(plan) == [["a", "b"], ["c", "d"], ["e", "f"]]  # parts span pools
    assert plan.num_texts == 6


def test_the_plan_does_not_depend_on_the_part_size_and_parts_are_whole_groups(tmp_path) -> None:
    rng = random.Random(1)
    pools = [[f"text {rng.randrange(3000)}" for _ in range(n)] for n in (1500, 700, 40)]
    cache = EmbeddingCache(tmp_path, "t")
    cache.write(text_keys(pools[0][:100]), np.ones((100, 2), np.float32))
    expected = None
    for part_size in (64, ENCODE_PART, 2 * ENCODE_PART, 8 * ENCODE_PART):
        parts = list(EncodePlan(pools, cache, part_size))
        flat = [text for part in parts for text in part]
        assert len(flat) == len(set(flat))
        assert all(len(part) == part_size for part in parts[:-1])
        assert all(len(part) % group_size(part_size) == 0 for part in parts[:-1])
        expected = expected or flat
        assert flat == expected
    assert not cache.find(text_keys(expected)).any()
    assert set(expected) == {t for pool in pools for t in pool} - set(pools[0][:100])


def test_a_part_size_that_would_split_a_group_is_refused_in_the_blend(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"encode_part_size.*multiple of 512"):
        mine_config("hashing:16", tmp_path, part_size=300)


# -- parts on any worker -------------------------------------------------------------------


def test_parts_in_any_order_and_process_mine_bitwise_what_one_process_mines(
    tmp_path, tiny_model
) -> None:
    inputs = write_mine_case(tmp_path / "data")
    here = mine_config(str(tiny_model), tmp_path / "cache-here")
    run_mine(inputs, tmp_path / "here" / "mined", here)

    # the mine stage as a Dask or Ray runner drives it (flows.curate), in this process
    spread = mine_config(str(tiny_model), tmp_path / "cache-spread")
    spec = get_stage("mine")
    assert spec.fan_out is not None
    tables = {"pairs": inputs.pairs_dirs, "corpus": list(inputs.corpus_dirs.values())}
    context = StageContext(run_dir=tmp_path / "spread")
    parts = spec.fan_out.plan(tables, context, spread)
    assert len(parts) == 6  # 180 unique documents in parts of 32
    for part in reversed(parts):
        release_shared_teacher(spread.teacher)  # a fresh replica, as on another worker
        spec.fan_out.run_part(part, spread)
    report = spec.run(tables, context, spread)

    assert report.details["texts_encoded"] == 40  # the queries only: the documents were cached
    assert shard_hashes(tmp_path / "spread" / "mined") == shard_hashes(tmp_path / "here" / "mined")
    texts = doc_texts(tmp_path / "data")
    np.testing.assert_array_equal(cached_embeddings(spread, texts), cached_embeddings(here, texts))
    plans = tmp_path / "cache-spread" / HFTeacher(spread.teacher).fingerprint / PLANS_DIR
    assert not any(plans.iterdir())  # the stage removed its plan once it had read it

    # the groups matter: parts of 64 (groups of 64) give other bits for some documents
    other = mine_config(str(tiny_model), tmp_path / "cache-other", part_size=64)
    run_mine(inputs, tmp_path / "other" / "mined", other)
    assert (cached_embeddings(other, texts) != cached_embeddings(here, texts)).any()


def test_a_part_that_fails_midway_keeps_its_committed_groups_and_the_retry_encodes_the_rest(
    tmp_path, tiny_model, monkeypatch
) -> None:
    inputs = write_mine_case(tmp_path / "data", num_docs=1200, max_words=10)  # 1,080 unique
    options = {"part_size": 2 * ENCODE_PART, "batch_size": 64}
    whole = mine_config(str(tiny_model), tmp_path / "cache-whole", **options)
    assert [encode_part(p, whole) for p in write_plan(inputs, whole, tmp_path / "a")] == [
        1024,
        56,
    ]

    cfg = mine_config(str(tiny_model), tmp_path / "cache", **options)
    first, second = write_plan(inputs, cfg, tmp_path / "b")
    monkeypatch.setattr(embed_cache, "COMMIT_EVERY_S", 0.0)  # commit each group of 512
    real_encode = HFTeacher.encode
    calls = 0

    def dies_in_the_second_group(self: HFTeacher, texts: list[str], progress: bool = False):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("worker lost")
        return real_encode(self, texts, progress)

    monkeypatch.setattr(HFTeacher, "encode", dies_in_the_second_group)
    with pytest.raises(RuntimeError, match="worker lost"):
        encode_part(first, cfg)
    monkeypatch.setattr(HFTeacher, "encode", real_encode)
    teacher = HFTeacher(cfg.teacher)
    assert len(EmbeddingCache(tmp_path / "cache", teacher.fingerprint)) == ENCODE_PART

    assert encode_part(first, cfg) == 1024 - ENCODE_PART  # the retry: the second group only
    assert encode_part(second, cfg) == 56
    assert encode_part(second, cfg) == 0  # a part retried after it finished encodes nothing
    texts = doc_texts(tmp_path / "data")
    np.testing.assert_array_equal(cached_embeddings(cfg, texts), cached_embeddings(whole, texts))


# -- what a worker may not do --------------------------------------------------------------


def test_an_unwritable_cache_folder_is_named_with_its_setting(tmp_path) -> None:
    inputs = write_mine_case(tmp_path / "data")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = mine_config("hashing:16", blocker / "cache")
    for attempt in (
        lambda: run_mine(inputs, tmp_path / "mined", cfg),
        lambda: write_plan(inputs, cfg, tmp_path / "mined"),
        lambda: encode_part("hashing-16-v1/plans/x/part-00000.parquet", cfg),
    ):
        with pytest.raises(ConfigError, match=r"a-file/cache.*teacher\.cache_dir"):
            attempt()
    assert not (tmp_path / "mined").exists()


def test_a_worker_that_sees_another_cache_folder_is_told_to_share_one(tmp_path) -> None:
    inputs = write_mine_case(tmp_path / "data")
    planner = mine_config("hashing:16", tmp_path / "shared")
    parts = write_plan(inputs, planner, tmp_path / "mined")
    elsewhere = mine_config("hashing:16", tmp_path / "local")
    with pytest.raises(ConfigError, match=r"local/hashing-16-v1.*shared folder"):
        encode_part(parts[0], elsewhere)
    assert not list((tmp_path / "local").rglob("seg-*"))  # nothing encoded into it


def test_a_worker_whose_teacher_resolves_differently_is_told_to_pin_it(
    tmp_path, tiny_model
) -> None:
    """A planner on a CPU without native bf16 resolves `dtype: auto` to float32, a GPU worker
    to bfloat16: different fingerprints, so different cache folders; the part says so,
    encoding nothing. (The planner's float32 is pinned here: this CPU may have bf16.)"""
    inputs = write_mine_case(tmp_path / "data")
    planner = mine_config(str(tiny_model), tmp_path / "cache", dtype="float32")
    parts = write_plan(inputs, planner, tmp_path / "m")
    on_gpu = mine_config(str(tiny_model), tmp_path / "cache", dtype="bfloat16")
    with pytest.raises(ConfigError, match=r"plan was made for teacher llama-.*teacher\.dtype"):
        encode_part(parts[0], on_gpu)


def test_default_parts_are_sized_from_the_corpus_in_whole_groups() -> None:
    from embedcurate.pipeline.mining.encode_plan import (
        AUTO_PARTS,
        MAX_AUTO_PART,
        group_size,
        planned_part_size,
    )

    assert planned_part_size(None, 100) == ENCODE_PART  # a small corpus: one group a part
    scifact = planned_part_size(None, 5_183 + 919)  # corpus and pairs rows
    assert scifact == ENCODE_PART
    assert math.ceil((5_183 + 919) / scifact) >= 2 * 4  # several parts for each of 2 workers
    assert planned_part_size(None, 8_841_823) == MAX_AUTO_PART  # MS MARCO: a bounded count
    mid = planned_part_size(None, 500_000)
    assert mid % ENCODE_PART == 0
    assert mid * AUTO_PARTS >= 500_000 > (mid - ENCODE_PART) * AUTO_PARTS
    assert planned_part_size(256, 10**6) == 256  # the blend's setting wins
    assert group_size(None) == group_size(mid) == ENCODE_PART
