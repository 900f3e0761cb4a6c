"""Text normalisation, hashing and n-gram overlap shared by dedup, filters and decontamination.

One definition of "the same text" for the whole pipeline: lower-cased, Unicode NFKC, runs of
non-alphanumeric characters collapsed to one space.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# ASCII fast path: the same result as the rule above, by a table instead of a regex (about
# ten times faster; mining hashes every candidate's text with it)
_ASCII_FOLD = {c: " " for c in range(128) if not chr(c).isalnum()} | {
    c: chr(c).lower() for c in range(ord("A"), ord("Z") + 1)
}


def normalize_text(text: str) -> str:
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold is lower()
        return " ".join(text.translate(_ASCII_FOLD).split())
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def text_hash(text: str) -> str:
    """Stable 16-hex-digit hash of the normalised text (exact-duplicate key)."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).hexdigest()


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the normalised text; a text shorter than n gives one n-gram of itself."""
    words = normalize_text(text).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def containment(part: set, whole: set) -> float:
    """Share of `part`'s n-grams that occur in `whole` (asymmetric: a short query inside a doc)."""
    return len(part & whole) / len(part) if part else 0.0


def unique_in_order(texts: Iterable[str]) -> list[str]:
    """Drop later texts whose normalised form was already seen, keeping first occurrences."""
    seen: set[str] = set()
    kept: list[str] = []
    for text in texts:
        key = text_hash(text)
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept
