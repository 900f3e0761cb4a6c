"""Near-duplicate control: MinHash over word shingles (datasketch), per row and across a set.

A negative that near-copies the row's positive teaches the model to push a text away from
itself; two negatives that near-copy each other waste a slot. Exact copies are already gone
(mining collapses equal normalised texts); these are the copies with a changed word, a
different whitespace or a truncated tail. Jaccard similarity of word `k`-shingle sets is
estimated with MinHash (Broder, 1997) through `datasketch`, imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedcurate.pipeline.blend import NearDuplicateConfig
from embedcurate.pipeline.textnorm import text_hash, word_ngrams

MINHASH_SEED = 1  # fixed: signatures must be comparable across rows and runs
NEAR_POSITIVE = "near_duplicate_of_positive"
NEAR_NEGATIVE = "near_duplicate_negative"
TEACHER_NEAR_POSITIVE = "teacher_near_duplicate_of_positive"
TEACHER_NEAR_NEGATIVE = "teacher_near_duplicate_negative"


def shingles(text: str, num_words: int) -> list[bytes]:
    """Word `num_words`-grams of the normalised text, as MinHash wants them (bytes)."""
    return [" ".join(gram).encode("utf-8") for gram in word_ngrams(text, num_words)]


@dataclass
class MinHasher:
    """Signatures of texts under one configuration, memoised for texts seen within a row."""

    cfg: NearDuplicateConfig
    _memo: dict[str, Any] = field(default_factory=dict)

    def signature(self, text: str) -> Any:
        found = self._memo.get(text)
        if found is None:
            from datasketch import MinHash

            found = MinHash(num_perm=self.cfg.num_perm, seed=MINHASH_SEED)
            found.update_batch(shingles(text, self.cfg.shingle_words))
            if len(self._memo) > 10_000:
                self._memo.clear()
            self._memo[text] = found
        return found

    def similar(self, a: str, b: str) -> bool:
        return float(self.signature(a).jaccard(self.signature(b))) >= self.cfg.threshold


def near_duplicate_reasons(
    hasher: MinHasher,
    positive: str,
    negatives: Sequence[str],
    cosines: np.ndarray | None = None,
    teacher_cosine: float | None = None,
) -> list[str | None]:
    """Per negative, why it is a near-duplicate (or None to keep it), hardest first.

    A negative is compared with the positive and with the negatives kept before it, so of two
    near-copies the harder one stays. `cosines`, when given, is the (1 + n, 1 + n) teacher
    cosine matrix of [positive, *negatives]; with `teacher_cosine` it catches paraphrases
    that share few words.
    """
    reasons: list[str | None] = []
    kept: list[int] = []
    for i, negative in enumerate(negatives):
        reason = None
        if hasher.similar(positive, negative):
            reason = NEAR_POSITIVE
        elif any(hasher.similar(negatives[j], negative) for j in kept):
            reason = NEAR_NEGATIVE
        elif cosines is not None and teacher_cosine is not None:
            if cosines[0, i + 1] >= teacher_cosine:
                reason = TEACHER_NEAR_POSITIVE
            elif any(cosines[j + 1, i + 1] >= teacher_cosine for j in kept):
                reason = TEACHER_NEAR_NEGATIVE
        reasons.append(reason)
        if reason is None:
            kept.append(i)
    return reasons


class SetNearDuplicates:
    """Counts texts of a whole set that near-copy an earlier text (MinHash LSH)."""

    def __init__(self, cfg: NearDuplicateConfig) -> None:
        from datasketch import MinHashLSH

        self.hasher = MinHasher(cfg)
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        self.seen: set[str] = set()
        self.num_texts = 0
        self.num_near_duplicates = 0

    def add(self, text: str) -> None:
        """Count `text`; exact repeats are counted by the card's collision hashes, not here."""
        key = text_hash(text)
        self.num_texts += 1
        if key in self.seen:
            return
        signature = self.hasher.signature(text)
        if self.lsh.query(signature):
            self.num_near_duplicates += 1
        self.lsh.insert(str(len(self.seen)), signature)
        self.seen.add(key)

    def to_dict(self) -> dict[str, int]:
        return {"texts": self.num_texts, "near_duplicates": self.num_near_duplicates}
