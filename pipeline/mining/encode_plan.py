"""The encode plan: which groups of corpus texts the teacher encodes, decided by the inputs alone.

A teacher's embedding of a text depends, in its last bits (about 1e-7), on the texts it was
handed with: they are sorted by length, batched and padded together. It does not depend on the
process, the thread count or the worker that runs the teacher. So for every runner (threads in
one process, Dask or Ray workers) to write byte-identical mined shards, each must hand the
teacher the same groups of texts, and this module decides them before anything is encoded:

1. every pool's document texts as the teacher sees them, pools in mining order;
2. each text once, at its first appearance (by cache key, so across pools too);
3. minus the texts the embedding cache already holds;
4. cut into parts of `encode_part_size` texts; a part is encoded `group_size` texts per call.

A part is whole groups, so the groups are the same whatever the part size (as long as it is
a multiple of ENCODE_PART) and whichever worker encodes which part. `encode_cached` commits
whole groups only, so a part retried after its worker died finds the groups that worker
finished in the cache and encodes the rest in the same groups. The plan depends on the inputs,
the teacher's fingerprint and the cache's contents; never on the runner or the worker count.
(A text another run with the same teacher commits meanwhile is read from the cache as that
run encoded it.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from embedcurate.pipeline.mining.embed_cache import (
    ENCODE_PART,
    EmbeddingCache,
    in_sorted,
    text_keys,
)

AUTO_PARTS = 16  # parts the default sizing aims at: enough to keep several workers busy
MAX_AUTO_PART = 128 * ENCODE_PART  # ... but no part above 65,536 texts (fewer, longer tasks)


def group_size(part_size: int | None) -> int:
    """Texts per call to the teacher for parts of `part_size` texts (None: sized parts, which
    are whole groups of ENCODE_PART)."""
    return ENCODE_PART if part_size is None else min(part_size, ENCODE_PART)


def planned_part_size(configured: int | None, num_documents: int) -> int:
    """The part size: the configured one, else about 1/AUTO_PARTS of the documents in whole
    groups, between one group and MAX_AUTO_PART.

    Sizing parts from the corpus keeps a small corpus spread over the workers (SciFact's
    5,183 documents in parts of 4,096 gave 2 workers 2 parts and no speed-up) and a large one
    in a bounded number of tasks. Any size of whole groups hands the teacher the same groups,
    so the mined bytes do not depend on it.
    """
    if configured is not None:
        return configured
    groups = max(1, math.ceil(num_documents / AUTO_PARTS / ENCODE_PART))
    return min(groups * ENCODE_PART, MAX_AUTO_PART)


def first_appearances(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys, index of each one's first appearance), in order of first appearance."""
    unique, first = np.unique(keys, return_index=True)
    order = np.argsort(first, kind="stable")
    return unique[order], first[order]


class SortedKeys:
    """A growing set of uint64 keys kept as one sorted array (8 bytes a key, vectorised
    lookup; a Python set would take about eight times the memory for a large corpus)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: which keys are in the set."""
        return in_sorted(self.keys, keys)

    def add(self, keys: np.ndarray) -> None:
        """Add keys not in the set yet (a merge in O(n), not a sort of everything)."""
        new = np.sort(keys)
        self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)


class EncodePlan:
    """The parts to encode, read pool by pool as the parts are taken.

    Iterating yields each part's texts (lists of at most `part_size`). Only one pool's texts
    and the keys planned so far are held, so planning a corpus costs what mining it does.
    `num_texts` counts the texts planned so far: it grows as pools are read, and is the
    plan's total once iteration ends.
    """

    def __init__(
        self, pool_texts: Iterable[Sequence[str]], cache: EmbeddingCache, part_size: int
    ) -> None:
        if part_size % ENCODE_PART and ENCODE_PART % part_size:
            raise ValueError(f"part_size must be a multiple of {ENCODE_PART} or divide it")
        self.pool_texts = pool_texts
        self.cache = cache
        self.part_size = part_size
        self.num_texts = 0

    def new_texts(self) -> Iterator[list[str]]:
        """Each pool's texts that are neither cached nor planned for an earlier pool."""
        planned = SortedKeys()
        for texts in self.pool_texts:
            unique, first = first_appearances(text_keys(texts))
            new = ~self.cache.find(unique) & ~planned.contains(unique)
            planned.add(unique[new])
            self.num_texts += int(new.sum())
            yield [texts[int(i)] for i in first[new]]

    def __iter__(self) -> Iterator[list[str]]:
        """Parts of `part_size` texts (the last may be shorter); a part may span pools."""
        carry: list[str] = []  # the start of a part, from the end of the pools before
        for texts in self.new_texts():
            start = min(self.part_size - len(carry), len(texts)) if carry else 0
            carry.extend(texts[:start])
            if len(carry) == self.part_size:
                yield carry
                carry = []
            for begin in range(start, len(texts), self.part_size):
                part = texts[begin : begin + self.part_size]
                if len(part) < self.part_size:
                    carry = part
                else:
                    yield part
        if carry:
            yield carry
