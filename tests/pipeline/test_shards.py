from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedcurate.pipeline.errors import ShardSetError
from embedcurate.pipeline.manifest import MANIFEST_NAME, read_manifest
from embedcurate.pipeline.schemas import TableKind, rows_to_table, schema_for
from embedcurate.pipeline.shards import (
    ShardWriter,
    read_shards,
    shard_name,
    validate_shards,
    write_shards,
)

REPO = Path(__file__).resolve().parents[2]


def _written(tmp_path: Path, rows: list[dict], rows_per_shard: int = 4) -> Path:
    out = tmp_path / "set"
    write_shards(
        rows_to_table(rows, TableKind.PAIRS),
        out,
        TableKind.PAIRS,
        rows_per_shard=rows_per_shard,
        config={"k": 1},
        seeds={"seed": 7},
    )
    return out


def test_writer_splits_into_named_shards_with_manifest(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(10))
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert names == [shard_name(i, 3) for i in range(3)]
    manifest = read_manifest(out)
    assert [e.rows for e in manifest.shards] == [4, 4, 2]
    assert manifest.num_rows == 10
    assert manifest.seeds == {"seed": 7}
    assert manifest.config == {"k": 1}
    assert len(manifest.config_hash) == 64
    assert manifest.kind == "pairs"
    assert pq.ParquetFile(out / names[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert validate_shards(out) == []


def test_round_trip_through_datasets_and_polars(tmp_path, pair_rows) -> None:
    rows = pair_rows(9)
    rows[3]["given_negatives"] = ["a negative", "another"]
    out = _written(tmp_path, rows)
    expected = rows_to_table(rows, TableKind.PAIRS).to_pylist()

    assert read_shards(out).to_pylist() == expected

    from datasets import load_dataset

    files = sorted(str(p) for p in out.glob("train-*.parquet"))
    dataset = load_dataset("parquet", data_files=files, split="train")
    assert dataset.num_rows == 9
    assert [dict(r) for r in dataset] == expected

    frame = pl.scan_parquet(str(out / "train-*.parquet")).collect()
    assert frame.to_dicts() == expected


def test_same_rows_give_same_shard_hashes(tmp_path, pair_rows) -> None:
    first = read_manifest(_written(tmp_path / "a", pair_rows(10)))
    second = read_manifest(_written(tmp_path / "b", pair_rows(10)))
    assert [e.sha256 for e in first.shards] == [e.sha256 for e in second.shards]


def test_empty_table_still_gives_a_readable_set(tmp_path) -> None:
    out = tmp_path / "empty"
    write_shards(schema_for(TableKind.TRAIN).empty_table(), out, TableKind.TRAIN)
    assert validate_shards(out) == []
    assert read_shards(out).num_rows == 0


def test_rewrite_replaces_a_previous_set(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(10))
    write_shards(
        rows_to_table(pair_rows(3), TableKind.PAIRS), out, TableKind.PAIRS, rows_per_shard=4
    )
    assert sorted(p.name for p in out.glob("*.parquet")) == [shard_name(0, 1)]
    assert read_shards(out).num_rows == 3


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda d: (d / shard_name(1, 3)).unlink(), "train-00001-of-00003.parquet: missing"),
        (
            lambda d: os.truncate(d / shard_name(0, 3), 100),
            "train-00000-of-00003.parquet: truncated",
        ),
        (
            lambda d: _flip_byte(d / shard_name(2, 3)),
            "train-00002-of-00003.parquet: sha256 mismatch",
        ),
        (lambda d: (d / "stray.parquet").write_bytes(b"x"), "stray.parquet: extra file"),
        (lambda d: (d / MANIFEST_NAME).unlink(), "manifest.json is missing"),
    ],
    ids=["missing", "truncated", "hash", "extra", "no-manifest"],
)
def test_validate_names_the_shard_and_problem(tmp_path, pair_rows, corrupt, expected) -> None:
    out = _written(tmp_path, pair_rows(10))
    corrupt(out)
    problems = validate_shards(out)
    assert any(expected in p for p in problems), problems
    with pytest.raises(ShardSetError):
        read_shards(out)


def _edit_manifest(shard_dir: Path, edit) -> None:
    path = shard_dir / MANIFEST_NAME
    payload = json.loads(path.read_text(encoding="utf-8"))
    edit(payload)
    path.write_text(json.dumps(payload), encoding="utf-8")


def test_validate_checks_each_shards_rows_against_its_parquet_footer(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(10))

    def bump_first_shard(payload: dict) -> None:
        payload["shards"][0]["rows"] += 1
        payload["num_rows"] += 1  # a consistent total, so only the footer can tell

    _edit_manifest(out, bump_first_shard)
    problems = validate_shards(out)
    assert problems == [
        "train-00000-of-00003.parquet: 4 rows in its Parquet footer, manifest says 5"
    ], problems
    with pytest.raises(ShardSetError, match="Parquet footer"):
        read_shards(out)


def test_validate_checks_the_total_against_the_sum_of_the_shards(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(10))
    _edit_manifest(out, lambda payload: payload.update(num_rows=11))
    assert validate_shards(out) == [
        "manifest.json: num_rows says 11, but its shards list 10 rows in all"
    ]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_validate_detects_a_shard_of_another_schema(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(10))
    target = out / shard_name(0, 3)
    other = pa.table({"schema_version": pa.array([1], pa.int16()), "x": ["y"]})
    pq.write_table(other, target)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    from embedcurate.pipeline.atomic import sha256_file

    manifest["shards"][0].update(bytes=target.stat().st_size, sha256=sha256_file(target))
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = validate_shards(out)
    assert any("train-00000-of-00003.parquet: schema mismatch" in p for p in problems), problems


def test_validate_refuses_the_wrong_table_kind(tmp_path, pair_rows) -> None:
    out = _written(tmp_path, pair_rows(4))
    problems = validate_shards(out, TableKind.TRAIN)
    assert any("holds a pairs table, expected train" in p for p in problems)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {support!r})
    from testkit.rows import make_pair_row
    from embedcurate.pipeline.schemas import TableKind, rows_to_table
    from embedcurate.pipeline.shards import ShardWriter

    with ShardWriter({out!r}, TableKind.PAIRS, rows_per_shard=5) as writer:
        for start in range(0, 60, 5):
            rows = [make_pair_row(i) for i in range(start, start + 5)]
            writer.write(rows_to_table(rows, TableKind.PAIRS))
            time.sleep({pause})
    """
)


def _run_writer(out: Path, pause: float) -> subprocess.Popen:
    script = _SLOW_WRITER.format(support=str(REPO / "tests" / "support"), out=str(out), pause=pause)
    return subprocess.Popen([sys.executable, "-c", script])


@pytest.mark.parametrize("parts_before_kill", [1, 6])
def test_writer_killed_mid_write_leaves_no_complete_set_and_rerun_completes(
    tmp_path, parts_before_kill
) -> None:
    out = tmp_path / "killed"
    proc = _run_writer(out, pause=0.3)
    deadline = time.monotonic() + 60
    while len(list(out.glob(".part-*.parquet"))) < parts_before_kill:
        assert time.monotonic() < deadline, "writer made no progress"
        assert proc.poll() is None, "writer finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert any("manifest.json is missing" in p for p in validate_shards(out))
    with pytest.raises(ShardSetError):
        read_shards(out)

    rerun = _run_writer(out, pause=0)
    assert rerun.wait(timeout=120) == 0
    assert validate_shards(out) == []
    table = read_shards(out)
    assert sorted(table.column("example_id").to_pylist()) == [f"ex-{i:06d}" for i in range(60)]
    assert not list(out.glob(".*"))


def test_writer_not_finalised_on_error(tmp_path, pair_rows) -> None:
    out = tmp_path / "broken"

    def write_then_fail() -> None:
        with ShardWriter(out, TableKind.PAIRS, rows_per_shard=2) as writer:
            writer.write(rows_to_table(pair_rows(5), TableKind.PAIRS))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert not (out / MANIFEST_NAME).exists()
