from __future__ import annotations

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
    (folder / f".seg-x{KEYS_SUFFIX}.123.tmp").write_bytes(b"partial")
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
