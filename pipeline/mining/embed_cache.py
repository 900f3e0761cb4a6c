"""Embedding cache on disk: a text encoded once by a teacher is never encoded again.

Layout, one folder per teacher fingerprint (model, weights, pooling, length, dtype, ...)::

    <root>/<teacher_key>/seg-<hash>.keys.npy   (n,) uint64, the text keys of this segment
    <root>/<teacher_key>/seg-<hash>.emb.npy    (n, dim) float32, rows in the same order

A text's key is the first 8 bytes of blake2b over the exact text the teacher sees (prefix
included), so a query and a document with the same words but different prefixes differ.
Segments are immutable and written atomically (temporary name, fsync, rename), embeddings
first and keys last: a segment counts only once its keys file exists, so a writer killed at
any point leaves nothing a reader will trust (and `.tmp` leftovers are removed next time).
New texts are encoded in parts of `ENCODE_PART` texts, and what is encoded is committed as a
segment every `COMMIT_EVERY_S` seconds: a run killed while encoding loses at most that much
work, and a rerun encodes only the rest. (Committing by time, not by count, keeps the cost of
a segment, about three fsyncs, negligible for a fast GPU teacher as for a slow CPU one.)
Embeddings are read through memory maps, so a lookup costs pages, not a copy of the cache.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedcurate.pipeline.atomic import atomic_path, remove_temp_files
from embedcurate.pipeline.packaged import cache_root

logger = logging.getLogger(__name__)

KEYS_SUFFIX = ".keys.npy"
EMB_SUFFIX = ".emb.npy"
ENCODE_PART = 512  # texts per call to the teacher (and per progress step)
COMMIT_EVERY_S = 10.0  # encoded texts are committed as a segment at least this often
MAX_SEGMENT_TEXTS = 65_536  # ... and at least every this many texts


def default_cache_root() -> Path:
    """The embeddings folder under the shared cache root (`packaged.cache_root`)."""
    return cache_root() / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(n,) uint64 keys of the exact texts (not normalised: the teacher sees every character)."""
    keys = np.empty(len(texts), dtype=np.uint64)
    for i, text in enumerate(texts):
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        keys[i] = int.from_bytes(digest, "little")
    return keys


def in_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) bool: which of `keys` are in the sorted array `sorted_keys` (vectorised)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class EmbeddingCache:
    """Segments of (key, embedding) rows for one teacher; add-only, safe against killed writers."""

    def __init__(self, root: str | Path, teacher_key: str) -> None:
        self.folder = Path(root) / teacher_key
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.folder, shared=True)  # other runs may be writing here now
        self.stats = CacheStats()
        self._load_index()

    def _segments(self) -> list[str]:
        names = sorted(
            p.name.removesuffix(KEYS_SUFFIX) for p in self.folder.glob(f"*{KEYS_SUFFIX}")
        )
        return [n for n in names if (self.folder / f"{n}{EMB_SUFFIX}").is_file()]

    def _load_index(self) -> None:
        """Sorted keys of all segments, with (segment, row) for each, for vectorised lookup."""
        self._segment_names = self._segments()
        keys, segment_ids, rows = [], [], []
        for seg_id, name in enumerate(self._segment_names):
            seg_keys = np.load(self.folder / f"{name}{KEYS_SUFFIX}", allow_pickle=False)
            keys.append(seg_keys)
            segment_ids.append(np.full(len(seg_keys), seg_id, dtype=np.int32))
            rows.append(np.arange(len(seg_keys), dtype=np.int64))
        if keys:
            all_keys = np.concatenate(keys)
            order = np.argsort(all_keys, kind="stable")
            self._keys = all_keys[order]
            self._seg = np.concatenate(segment_ids)[order]
            self._row = np.concatenate(rows)[order]
        else:
            self._keys = np.empty(0, dtype=np.uint64)
            self._seg = np.empty(0, dtype=np.int32)
            self._row = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: which keys are cached."""
        return in_sorted(self._keys, keys)

    def read(self, keys: np.ndarray, out: np.ndarray) -> None:
        """Fill `out` (len(keys), dim) with the cached embeddings of `keys` (all must be cached)."""
        at = np.searchsorted(self._keys, keys)
        segs, rows = self._seg[at], self._row[at]
        for seg_id in np.unique(segs):
            mask = segs == seg_id
            name = self._segment_names[int(seg_id)]
            stored = np.load(self.folder / f"{name}{EMB_SUFFIX}", mmap_mode="r", allow_pickle=False)
            if stored.shape[1] != out.shape[1]:
                raise ValueError(
                    f"{self.folder / name}: cached dimension {stored.shape[1]}, "
                    f"teacher gives {out.shape[1]}"
                )
            out[mask] = stored[rows[mask]]
            del stored  # unmap now, so cached pages do not stay in this process's RSS

    def write(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Store a new segment (keys must not be cached yet; duplicates within are dropped)."""
        if not len(keys):
            return
        keys, first = np.unique(keys, return_index=True)
        embeddings = np.ascontiguousarray(embeddings[first], dtype=np.float32)
        name = "seg-" + hashlib.blake2b(keys.tobytes(), digest_size=12).hexdigest()
        with atomic_path(self.folder / f"{name}{EMB_SUFFIX}") as tmp, open(tmp, "wb") as handle:
            np.save(handle, embeddings)
        with atomic_path(self.folder / f"{name}{KEYS_SUFFIX}") as tmp, open(tmp, "wb") as handle:
            np.save(handle, keys)  # written last: its presence marks the segment complete
        self._add_to_index(name, keys)

    def _add_to_index(self, name: str, keys: np.ndarray) -> None:
        """Merge a new segment's (sorted, unique) keys into the sorted index in O(n), without
        reading every segment's keys again as `_load_index` does."""
        seg_id = len(self._segment_names)
        self._segment_names.append(name)
        at = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, at, keys)
        self._seg = np.insert(self._seg, at, np.full(len(keys), seg_id, dtype=np.int32))
        self._row = np.insert(self._row, at, np.arange(len(keys), dtype=np.int64))


def encode_cached(
    texts: Sequence[str],
    encode: Callable[[list[str]], np.ndarray],
    dim: int,
    cache: EmbeddingCache | None,
    *,
    part_size: int = ENCODE_PART,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(texts), dim) embeddings, encoding only texts neither cached nor seen earlier here.

    Repeated texts in `texts` are encoded once. New texts are encoded `part_size` at a time;
    the parts encoded so far are committed to the cache every `COMMIT_EVERY_S` seconds (and
    at the end), so an interrupted run keeps what it finished. `on_progress(n)` hears of
    every n texts done: the cached ones at once, then each encoded part.
    """
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not len(texts):
        return out
    keys = text_keys(texts)
    unique_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    unique_emb = np.empty((len(unique_keys), dim), dtype=np.float32)
    cached = cache.find(unique_keys) if cache is not None else np.zeros(len(unique_keys), bool)
    if cache is not None and cached.any():
        from_cache = np.empty((int(cached.sum()), dim), dtype=np.float32)
        cache.read(unique_keys[cached], from_cache)
        unique_emb[cached] = from_cache
        cache.stats.hits += int(cached.sum())
    repeats = np.bincount(inverse.reshape(-1), minlength=len(unique_keys))  # texts per key
    if on_progress is not None and cached.any():
        on_progress(int(repeats[cached].sum()))
    missing = np.flatnonzero(~cached)
    # encode in original order of first appearance (length sorting happens in the teacher)
    missing = missing[np.argsort(first[missing], kind="stable")]
    pending: list[np.ndarray] = []  # encoded parts not yet committed
    last_commit = time.monotonic()
    for start in range(0, len(missing), part_size):
        part = missing[start : start + part_size]
        unique_emb[part] = encode([texts[int(first[i])] for i in part])
        pending.append(part)
        is_last = start + part_size >= len(missing)
        due = time.monotonic() - last_commit >= COMMIT_EVERY_S
        if cache is not None and (is_last or due or _count(pending) >= MAX_SEGMENT_TEXTS):
            rows = np.concatenate(pending)
            cache.write(unique_keys[rows], unique_emb[rows])
            cache.stats.misses += len(rows)
            pending, last_commit = [], time.monotonic()
        if on_progress is not None:
            on_progress(int(repeats[part].sum()))
    out[:] = unique_emb[inverse.reshape(-1)]
    return out


def _count(parts: list[np.ndarray]) -> int:
    return sum(len(part) for part in parts)
