from __future__ import annotations

import numpy as np
import pytest

from embedcurate.pipeline.mining.index import IndexConfig, VectorIndex


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_index_is_exact_inner_product_when_filled_in_chunks() -> None:
    docs, queries = unit_vectors(500, 16, 0), unit_vectors(20, 16, 1)
    index = VectorIndex(16, 500)
    for start in range(0, 500, 128):
        index.add(docs[start : start + 128])
    index.finalize()
    chunks = list(index.search_chunked(queries, k=7, chunk_size=6))
    assert [offset for offset, _, _ in chunks] == [0, 6, 12, 18]
    rows = np.vstack([r for _, _, r in chunks])
    expected = np.argsort(-(queries @ docs.T), axis=1)[:, :7]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(index.reconstruct(np.array([3, 499])), docs[[3, 499]])


def test_ivf_with_every_cell_probed_matches_flat() -> None:
    docs, queries = unit_vectors(2000, 8, 2), unit_vectors(10, 8, 3)
    flat = VectorIndex(8, 2000)
    flat.add(docs)
    flat.finalize()
    ivf = VectorIndex(8, 2000, IndexConfig(kind="ivf", nlist=8, nprobe=8, train_size_per_list=40))
    for start in range(0, 2000, 300):  # trains after the first 320 vectors arrive
        ivf.add(docs[start : start + 300])
    ivf.finalize()
    assert ivf.ntotal == 2000
    np.testing.assert_array_equal(ivf.search(queries, 5)[1], flat.search(queries, 5)[1])
    np.testing.assert_allclose(ivf.reconstruct(np.array([1999])), docs[[1999]])


def test_k_beyond_the_corpus_is_refused_and_empty_corpus_too() -> None:
    index = VectorIndex(4, 3)
    index.add(unit_vectors(3, 4, 4))
    index.finalize()
    with pytest.raises(ValueError, match="exceeds this index's limit of 3"):
        index.search(unit_vectors(1, 4, 5), 4)
    with pytest.raises(ValueError, match="empty corpus"):
        VectorIndex(4, 0)


def test_finalize_checks_the_count() -> None:
    index = VectorIndex(4, 5)
    index.add(unit_vectors(3, 4, 6))
    with pytest.raises(ValueError, match="holds 3 vectors, expected 5"):
        index.finalize()


def test_ivf_probing_few_cells_misses_neighbours_and_reports_the_recall_it_measured() -> None:
    docs, queries = unit_vectors(3000, 16, 7), unit_vectors(40, 16, 8)
    cfg = IndexConfig(kind="ivf", nlist=30, nprobe=2, recall_sample=25)
    ivf = VectorIndex(16, 3000, cfg)
    ivf.add(docs)
    ivf.finalize()
    k = 10
    probed = ivf.search(queries, k)[1]
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
    found = [len(set(p) & set(e)) / k for p, e in zip(probed, exact, strict=True)]
    assert np.mean(found) < 0.9  # two cells of thirty: neighbours are missed
    described = ivf.describe()
    assert described["recall_queries"] == 25  # only the sample is searched twice
    assert described["recall"] == pytest.approx(np.mean(found[:25]), abs=1e-4)

    every_cell = VectorIndex(16, 3000, IndexConfig(kind="ivf", nlist=30, nprobe=30))
    every_cell.add(docs)
    every_cell.finalize()
    every_cell.search(queries, k)
    assert every_cell.describe()["recall"] == 1.0
