"""The vector index mining searches: FAISS, imported lazily (this is the only module that does).

- ``flat`` (default): exact inner product. With normalised embeddings that is cosine, and
  mining sees exactly the teacher's ranking.
- ``ivf``: an inverted file over ``nlist`` k-means cells, for corpora where exact search is
  too slow; it is trained on the first embeddings added (a sample of the corpus) and searches
  ``nprobe`` cells, so recall is below 1 and the report says by how much: the first
  ``recall_sample`` queries are searched a second time over every cell (exact for IVF-Flat) and
  ``describe()`` gives the share of the exact neighbours the probed search found.
- faiss-gpu, when it sees GPUs: the index is sharded over all of them; GPU search returns at
  most 2048 neighbours per query, so `max_k` says so and callers cap their k.

Documents are added in chunks and queries are searched in chunks (`search_chunked`), so the
only full-size allocation is the index itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss-gpu's limit on k (and nprobe) per search
IndexKind = Literal["flat", "ivf"]


@dataclass(frozen=True)
class IndexConfig:
    kind: IndexKind = "flat"
    nlist: int | None = None  # IVF cells; default 4 * sqrt(num_docs)
    nprobe: int = 32
    use_gpu: bool = True  # use faiss-gpu when it is installed and sees GPUs
    train_size_per_list: int = 64  # IVF training sample: this many vectors per cell
    recall_sample: int = 256  # IVF: queries also searched exactly to measure recall


def _faiss() -> Any:
    import faiss

    return faiss


def num_gpus() -> int:
    faiss = _faiss()
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def default_nlist(num_docs: int) -> int:
    return max(1, min(num_docs // 39, int(4 * math.sqrt(max(num_docs, 1)))))


class VectorIndex:
    """An inner-product index filled chunk by chunk; row i is the i-th vector added."""

    def __init__(self, dim: int, num_docs: int, cfg: IndexConfig | None = None) -> None:
        if num_docs < 1:
            raise ValueError("cannot build an index over an empty corpus")
        self.cfg = cfg or IndexConfig()
        self.dim = dim
        self.num_docs = num_docs
        self.kind: IndexKind = self.cfg.kind
        self.on_gpu = False
        self._pending: list[np.ndarray] = []  # IVF: vectors held until the sample is complete
        self._pending_rows = 0
        self._recall = _RecallTally()
        self._index = self._make_cpu_index()
        self._trained = self._index.is_trained

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) + self._pending_rows

    @property
    def max_k(self) -> int:
        return GPU_MAX_K if self.on_gpu else self.num_docs

    def _make_cpu_index(self) -> Any:
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        self.nlist = min(self.cfg.nlist or default_nlist(self.num_docs), self.num_docs)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(self.cfg.nprobe, self.nlist)
        self._quantizer = quantizer  # keep a reference: the IVF index does not own it
        return index

    def _train_size(self) -> int:
        return min(self.num_docs, self.nlist * self.cfg.train_size_per_list)

    def add(self, vectors: np.ndarray) -> None:
        """Add (n, dim) float32 vectors; IVF trains once it has seen its sample."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        if self._trained:
            self._index.add(vectors)
            return
        self._pending.append(vectors)
        self._pending_rows += len(vectors)
        if self._pending_rows >= self._train_size():
            self._train_and_flush()

    def _train_and_flush(self) -> None:
        sample = np.concatenate(self._pending)
        logger.info("training IVF (%d cells) on %d vectors", self.nlist, len(sample))
        self._index.train(sample[: self._train_size()])
        self._trained = True
        self._pending, self._pending_rows = [], 0
        self._index.add(sample)

    def finalize(self) -> VectorIndex:
        """Call after the last add: trains a small IVF, then moves the index to GPUs if any."""
        if not self._trained:
            self._train_and_flush()
        if self.ntotal != self.num_docs:
            raise ValueError(f"index holds {self.ntotal} vectors, expected {self.num_docs}")
        if self.kind == "ivf":
            self._index.make_direct_map()  # so reconstruct() works for positives
        if self.cfg.use_gpu and num_gpus() > 0:
            self._to_gpus()
        return self

    def _to_gpus(self) -> None:
        faiss = _faiss()
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # each GPU holds a slice of the corpus; results are merged
        self._cpu_index = self._index  # reconstruct() reads the CPU copy
        self._index = faiss.index_cpu_to_all_gpus(self._index, co=options)
        self.on_gpu = True
        logger.info("index sharded over %d GPU(s)", num_gpus())

    def describe(self) -> dict[str, int | bool | float | None]:
        """Settings a report should carry: IVF searches `nprobe` of `nlist` cells (approximate),
        with the recall measured on the first queries (None on GPUs, where it is not measured)."""
        if self.kind != "ivf":
            return {"exact": True}
        return {
            "exact": False,
            "nlist": self.nlist,
            "nprobe": min(self.cfg.nprobe, self.nlist),
            "recall": self._recall.value(),
            "recall_queries": self._recall.num_queries,
        }

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (num_queries, k), best first; rows -1 past the corpus end."""
        if k > self.max_k:
            raise ValueError(
                f"k={k} exceeds this index's limit of {self.max_k} neighbours per query"
            )
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self._index.search(queries, k)
        if self.kind == "ivf" and not self.on_gpu:
            self._measure_recall(queries, rows)
        return scores, rows

    def _measure_recall(self, queries: np.ndarray, found: np.ndarray) -> None:
        """Search the first `recall_sample` queries again over every cell and tally how many of
        those exact neighbours the probed search returned."""
        room = self.cfg.recall_sample - self._recall.num_queries
        if room <= 0:
            return
        sample, probed = queries[:room], found[:room]  # (n, dim), (n, k)
        nprobe = self._index.nprobe
        self._index.nprobe = self.nlist  # every cell: IVF-Flat stores full vectors, so exact
        try:
            _, exact = self._index.search(sample, probed.shape[1])
        finally:
            self._index.nprobe = nprobe
        self._recall.add(probed, exact)

    def search_chunked(
        self, queries: np.ndarray, k: int, chunk_size: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Search `chunk_size` queries at a time; yields (offset, scores, rows)."""
        for start in range(0, len(queries), chunk_size):
            scores, rows = self.search(queries[start : start + chunk_size], k)
            yield start, scores, rows

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of `rows`, (len(rows), dim)."""
        source = self._cpu_index if self.on_gpu else self._index
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return source.reconstruct_batch(rows)


@dataclass
class _RecallTally:
    """Exact neighbours found by the probed search, over the queries measured so far."""

    num_queries: int = 0
    num_found: int = 0
    num_exact: int = 0

    def add(self, probed: np.ndarray, exact: np.ndarray) -> None:
        for probed_rows, exact_rows in zip(probed, exact, strict=True):
            truth = set(exact_rows[exact_rows >= 0].tolist())
            self.num_found += len(truth & set(probed_rows.tolist()))
            self.num_exact += len(truth)
        self.num_queries += len(probed)

    def value(self) -> float | None:
        return round(self.num_found / self.num_exact, 4) if self.num_exact else None


def set_num_threads(num_threads: int) -> None:
    """FAISS's OpenMP thread count (benchmarks pin it to compare like with like)."""
    _faiss().omp_set_num_threads(num_threads)
