from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from embedcurate.pipeline.mining.embed_cache import (
    EMB_SUFFIX,
    KEYS_SUFFIX,
    EmbeddingCache,
    encode_cached,
    text_keys,
)


class CountingEncoder:
    """Deterministic fake embeddings that remember every text they were asked to encode."""

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return np.array([[len(t), t.count("a"), 1.0, i] for i, t in enumerate(texts)], np.float32)


def test_texts_are_encoded_once_and_reused_across_caches(tmp_path) -> None:
    encoder = CountingEncoder()
    texts = ["alpha", "beta", "alpha", "gamma"]
    first = encode_cached(texts, encoder, 4, EmbeddingCache(tmp_path, "teacher-a"))
    assert sorted(encoder.seen) == ["alpha", "beta", "gamma"]  # the repeat is encoded once
    np.testing.assert_array_equal(first[0], first[2])

    reopened = EmbeddingCache(tmp_path, "teacher-a")
    assert len(reopened) == 3
    again = encode_cached(["gamma", "alpha", "delta"], encoder, 4, reopened)
    assert encoder.seen[3:] == ["delta"]  # gamma and alpha came from the cache
    np.testing.assert_array_equal(again[0][:2], first[3][:2])
    np.testing.assert_array_equal(again[1][:2], first[0][:2])
    assert (reopened.stats.hits, reopened.stats.misses) == (2, 1)


def test_another_teacher_does_not_see_the_cache(tmp_path) -> None:
    encoder = CountingEncoder()
    encode_cached(["alpha"], encoder, 4, EmbeddingCache(tmp_path, "teacher-a"))
    encode_cached(["alpha"], encoder, 4, EmbeddingCache(tmp_path, "teacher-b"))
    assert encoder.seen == ["alpha", "alpha"]


def test_exact_text_is_the_key() -> None:
    keys = text_keys(["query: x", "passage: x", "query: x"])
    assert keys[0] == keys[2] != keys[1]


def test_a_killed_writer_leaves_nothing_a_reader_trusts(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "t")
    cache.write(text_keys(["kept"]), np.ones((1, 4), np.float32))
    folder = cache.folder
    # killed after the embeddings, before the keys: the segment is incomplete
    np.save(folder / f"seg-orphan{EMB_SUFFIX}", np.zeros((1, 4), np.float32))
    # killed mid-write of a temporary file
    (folder / f".seg-x{KEYS_SUFFIX}.{_dead_pid()}-1.tmp").write_bytes(b"partial")
    reopened = EmbeddingCache(tmp_path, "t")
    assert len(reopened) == 1
    assert not list(folder.glob("*.tmp"))
    found = reopened.find(text_keys(["kept", "orphan"]))
    assert found.tolist() == [True, False]


def test_dimension_mismatch_is_an_error(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "t")
    cache.write(text_keys(["x"]), np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="cached dimension 4"):
        cache.read(text_keys(["x"]), np.empty((1, 8), np.float32))


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_opening_a_shared_cache_keeps_the_temporary_files_of_live_writers(tmp_path) -> None:
    """Two runs share one cache: the second must not delete what the first is writing."""
    folder = EmbeddingCache(tmp_path, "t").folder
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".seg-a{EMB_SUFFIX}.{writer.pid}-7.tmp"
        ours = folder / f".seg-b{EMB_SUFFIX}.{os.getpid()}-9.tmp"  # another thread of ours
        dead = folder / f".seg-c{EMB_SUFFIX}.{_dead_pid()}-3.tmp"
        for path in (live, ours, dead):
            path.write_bytes(b"partial")
        EmbeddingCache(tmp_path, "t")
        assert sorted(p.name for p in folder.glob("*.tmp")) == sorted([live.name, ours.name])
    finally:
        writer.kill()
        writer.wait(timeout=30)
