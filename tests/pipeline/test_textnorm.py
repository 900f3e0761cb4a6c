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


def test_the_ascii_fast_path_normalises_exactly_as_the_unicode_rule() -> None:
    """Every ASCII character, alone and in random strings, gives what the regex rule gives."""
    import random
    import re
    import string
    import unicodedata

    def by_rule(text: str) -> str:
        folded = unicodedata.normalize("NFKC", text).casefold()
        return re.sub(r"[\W_]+", " ", folded, flags=re.UNICODE).strip()

    rng = random.Random(0)
    alphabet = "".join(chr(c) for c in range(128))
    samples = list(alphabet) + [
        "".join(rng.choice(alphabet + string.ascii_letters * 3) for _ in range(rng.randint(0, 80)))
        for _ in range(2000)
    ]
    mismatches = [s for s in samples if normalize_text(s) != by_rule(s)]
    assert mismatches == []
    wide = "Ünïcode__Text\u3000\uff37\uff29\uff24\uff25"  # not ASCII: the regex rule
    assert normalize_text(wide) == by_rule(wide) == "ünïcode text wide"
