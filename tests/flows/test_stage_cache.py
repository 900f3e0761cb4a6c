from __future__ import annotations

from pathlib import Path

import pytest

from embedcurate.flows.stage_cache import (
    files_fingerprint,
    is_fresh,
    mark_done,
    run_once,
    stage_key,
)
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import shard_name, write_shards


def _set(path: Path, rows: list[dict]) -> Path:
    write_shards(rows_to_table(rows, TableKind.PAIRS), path, TableKind.PAIRS, rows_per_shard=2)
    return path


def test_key_follows_settings_and_input_content(tmp_path, pair_rows) -> None:
    a = _set(tmp_path / "a", pair_rows(3))
    base = stage_key("mine", {"rule": "percpos:0.95"}, [a])
    assert stage_key("mine", {"rule": "percpos:0.95"}, [a]) == base
    assert stage_key("mine", {"rule": "percpos:0.9"}, [a]) != base
    assert stage_key("template", {"rule": "percpos:0.95"}, [a]) != base
    _set(tmp_path / "a", pair_rows(4))
    assert stage_key("mine", {"rule": "percpos:0.95"}, [a]) != base


def test_run_once_skips_until_settings_or_outputs_change(tmp_path, pair_rows) -> None:
    out = tmp_path / "out"
    calls: list[int] = []

    def stage() -> None:
        calls.append(1)
        _set(out, pair_rows(3))

    assert run_once(tmp_path, "s", {"x": 1}, [], [out], stage)
    assert not run_once(tmp_path, "s", {"x": 1}, [], [out], stage)
    assert run_once(tmp_path, "s", {"x": 2}, [], [out], stage)
    (out / shard_name(0, 2)).unlink()  # a damaged output is never taken as finished
    assert run_once(tmp_path, "s", {"x": 2}, [], [out], stage)
    assert len(calls) == 3


def test_a_failed_stage_is_not_marked_done(tmp_path) -> None:
    def broken() -> None:
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError):
        run_once(tmp_path, "s", {}, [], [tmp_path / "out"], broken)
    assert not is_fresh(tmp_path, "s", stage_key("s", {}, []))


def test_marker_for_missing_outputs_is_not_fresh(tmp_path) -> None:
    mark_done(tmp_path, "s", "k", [tmp_path / "gone"])
    assert not is_fresh(tmp_path, "s", "k")


def test_files_fingerprint_sees_edits(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("a\n")
    before = files_fingerprint(data)
    data.write_text("ab\n")
    assert files_fingerprint(data) != before
    assert files_fingerprint(tmp_path / "missing") == []
