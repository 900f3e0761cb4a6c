from __future__ import annotations

from embedcurate.pipeline.textnorm import (
    containment,
    jaccard,
    normalize_text,
    text_hash,
    unique_in_order,
    word_ngrams,
)


def test_normalisation_ignores_case_punctuation_and_width() -> None:
    assert normalize_text("  Hello,   WORLD!! ") == "hello world"
    assert text_hash("\uff28\uff45\uff4c\uff4c\uff4f world") == text_hash("hello, world")
    assert text_hash("hello world") != text_hash("hello word")


def test_ngram_overlap_measures() -> None:
    a = word_ngrams("the cat sat on the mat", 2)
    b = word_ngrams("the cat sat on a mat", 2)
    assert len(a) == 5
    assert 0 < jaccard(a, b) < 1
    assert containment(word_ngrams("cat sat", 2), a) == 1.0
    assert word_ngrams("short", 3) == {("short",)}


def test_unique_in_order_keeps_first_occurrence() -> None:
    assert unique_in_order(["A b", "c", "a B!", "c"]) == ["A b", "c"]
