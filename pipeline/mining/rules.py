"""Positive-aware hard-negative selection: the rules and the per-query choice, as pure functions.

A teacher ranks a query's candidates by score (inner product of normalised embeddings, so
cosine). Taking the top-ranked non-positives as negatives picks up many *false* negatives:
passages that answer the query but were never labelled. NV-Retriever (Moreira et al., 2024,
arXiv 2407.15831) shows that bounding a negative's score by the positive's score removes most
of them; its best rule, TopK-PercPos, keeps candidates scoring at most 95% of the positive.

Per query, in order:

1. exclusion: every labelled positive id, any candidate whose normalised text equals a
   positive, and (classification/clustering) any candidate sharing the query's label;
2. duplicate negative texts collapse to their best-ranked copy;
3. ranks count the teacher's order of what is left (0 = hardest), and the window
   ``[range_min, range_max)`` is the slice of that ranking considered;
4. the rule drops window candidates scoring above its threshold (counted per query); the
   positive score it is computed from is the lowest among the query's labelled positives
   (the stage passes it in), since a candidate ranked above any labelled positive is more
   likely an unlabelled positive than a negative;
5. sampling takes the ``num_negatives`` best survivors (``top``) or a uniform sample of them
   (``random``, from a generator seeded by ``(seed, example_id)``), hardest first.

Nothing here touches a model, an index or a file, so each step is tested on plain numbers.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from embedcurate.pipeline.textnorm import text_hash

RuleKind = Literal["percpos", "marginpos", "abs", "none"]
Sampling = Literal["top", "random"]
_RULE_TEXT = re.compile(r"^(percpos|marginpos|abs):(-?\d+(?:\.\d+)?)$")


def percpos_threshold(pos_score: float, percent: float) -> float:
    """TopK-PercPos (NV-Retriever, arXiv 2407.15831, sec. 4): keep ``s_neg <= P * s_pos``.

    Written as ``s_pos - (1 - P) * |s_pos|`` so that a negative positive score (possible for
    inner-product teachers) still gives a threshold *below* the positive; for ``s_pos >= 0``
    it is exactly ``P * s_pos``. P = 0.95 is the paper's best setting.
    """
    return pos_score - (1.0 - percent) * abs(pos_score)


def marginpos_threshold(pos_score: float, margin: float) -> float:
    """TopK-MarginPos (NV-Retriever, arXiv 2407.15831, sec. 4): keep ``s_neg <= s_pos - M``."""
    return pos_score - margin


def abs_threshold(pos_score: float, ceiling: float) -> float:
    """TopK-Abs (NV-Retriever, arXiv 2407.15831, sec. 4): keep ``s_neg <= T`` for any positive."""
    del pos_score
    return ceiling


def no_threshold(pos_score: float, value: float) -> float:
    """Naive top-k (no false-negative control): keep every candidate."""
    del pos_score, value
    return math.inf


_THRESHOLDS = {
    "percpos": percpos_threshold,
    "marginpos": marginpos_threshold,
    "abs": abs_threshold,
    "none": no_threshold,
}


@dataclass(frozen=True)
class MiningRule:
    """A parsed rule such as ``percpos:0.95``; `threshold` is the highest score it keeps."""

    kind: RuleKind
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> MiningRule:
        if text == "none":
            return cls("none")
        match = _RULE_TEXT.match(text)
        if match is None:
            raise ValueError(f"rule {text!r} is not one of percpos:P, marginpos:M, abs:T or none")
        kind, value = match.group(1), float(match.group(2))
        if kind == "percpos" and not 0.0 < value <= 1.0:
            raise ValueError(f"rule {text!r}: P must be in (0, 1], e.g. percpos:0.95")
        return cls(kind, value)  # type: ignore[arg-type]

    def threshold(self, pos_score: float) -> float:
        return _THRESHOLDS[self.kind](pos_score, self.value)

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class SelectionConfig:
    """The per-query choice: window, count and sampling (a subset of the blend's mining)."""

    rule: MiningRule
    num_negatives: int = 5
    range_min: int = 0
    range_max: int = 50
    sampling: Sampling = "top"
    seed: int = 0


@dataclass(frozen=True)
class Candidates:
    """A query's candidates in teacher order (score descending), with their ids and texts."""

    ids: Sequence[str]
    texts: Sequence[str]
    scores: np.ndarray  # (num_candidates,) float32, descending
    labels: Sequence[str | None] | None = None
    keys: Sequence[str] | None = None  # text_hash of each text, when the caller has them

    def key(self, position: int) -> str:
        return self.keys[position] if self.keys is not None else text_hash(self.texts[position])


@dataclass(frozen=True)
class Exclusion:
    """What may never be a negative of this query."""

    positive_ids: frozenset[str]
    positive_text_hashes: frozenset[str]
    label: str | None = None


@dataclass
class Selection:
    """The negatives chosen for one query, hardest first, with lineage."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    num_in_window: int = 0
    num_dropped_by_rule: int = 0
    window_scores: list[float] = field(default_factory=list)  # for calibration and the card


def exclusion_for(
    positive_ids: Sequence[str], positive_texts: Sequence[str], label: str | None = None
) -> Exclusion:
    return Exclusion(
        positive_ids=frozenset(positive_ids),
        positive_text_hashes=frozenset(text_hash(t) for t in positive_texts),
        label=label,
    )


def eligible_positions(candidates: Candidates, exclusion: Exclusion) -> list[int]:
    """Positions (in teacher order) of candidates that may be negatives, duplicates collapsed.

    A candidate is out if its id is a labelled positive, its normalised text equals a
    positive's, it shares the query's label, or its normalised text repeats an earlier
    (harder) eligible candidate's.
    """
    seen_hashes: set[str] = set(exclusion.positive_text_hashes)
    positions: list[int] = []
    for position, doc_id in enumerate(candidates.ids):
        if doc_id in exclusion.positive_ids:
            continue
        if (
            exclusion.label is not None
            and candidates.labels is not None
            and candidates.labels[position] == exclusion.label
        ):
            continue
        key = candidates.key(position)
        if key in seen_hashes:
            continue
        seen_hashes.add(key)
        positions.append(position)
    return positions


def query_rng(seed: int, example_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, example_id), never on shard or batch order."""
    digest = hashlib.blake2b(f"{seed}\x00{example_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def sample_positions(
    num_available: int, num_wanted: int, sampling: Sampling, rng: np.random.Generator | None
) -> list[int]:
    """Which survivors to take (indices into the survivor list, ascending = hardest first)."""
    count = min(num_available, num_wanted)
    if sampling == "top" or count == num_available:
        return list(range(count))
    if rng is None:
        raise ValueError("random sampling needs a generator")
    return sorted(rng.choice(num_available, size=count, replace=False).tolist())


def select_negatives(
    candidates: Candidates,
    exclusion: Exclusion,
    pos_score: float,
    cfg: SelectionConfig,
    example_id: str,
) -> Selection:
    """Apply exclusion, window, rule and sampling to one query's ranked candidates."""
    eligible = eligible_positions(candidates, exclusion)
    window = eligible[cfg.range_min : cfg.range_max]
    threshold = cfg.rule.threshold(pos_score)
    scores = candidates.scores
    survivors = [(rank, pos) for rank, pos in enumerate(window, cfg.range_min)]
    survivors = [(rank, pos) for rank, pos in survivors if scores[pos] <= threshold]
    rng = query_rng(cfg.seed, example_id) if cfg.sampling == "random" else None
    chosen = sample_positions(len(survivors), cfg.num_negatives, cfg.sampling, rng)
    selection = Selection(
        num_in_window=len(window),
        num_dropped_by_rule=len(window) - len(survivors),
        window_scores=[float(scores[pos]) for pos in window],
    )
    for index in chosen:
        rank, pos = survivors[index]
        selection.ids.append(str(candidates.ids[pos]))
        selection.texts.append(str(candidates.texts[pos]))
        selection.scores.append(float(scores[pos]))
        selection.ranks.append(rank)
    return selection


def merge_given(
    retrieved: Candidates,
    given_texts: Sequence[str],
    given_scores: np.ndarray,
    given_ids: Sequence[str],
    given_keys: Sequence[str] | None = None,
) -> Candidates:
    """Merge a row's given negatives into its retrieved candidates, in one score order.

    Given negatives (a generator's hard negative, other-label examples) are scored by the same
    teacher, so they are ranked and ruled exactly like retrieved ones. Ties keep retrieved
    candidates first.
    """
    if not len(given_texts):
        return retrieved
    scores = np.concatenate([retrieved.scores, given_scores.astype(np.float32)])
    order = np.argsort(-scores, kind="stable")
    ids = [*retrieved.ids, *given_ids]
    texts = [*retrieved.texts, *given_texts]
    labels = (
        [*retrieved.labels, *([None] * len(given_texts))] if retrieved.labels is not None else None
    )
    keys = None
    if retrieved.keys is not None:
        extra = given_keys if given_keys is not None else [text_hash(t) for t in given_texts]
        keys = [*retrieved.keys, *extra]
    return Candidates(
        ids=[ids[i] for i in order],
        texts=[texts[i] for i in order],
        scores=scores[order],
        labels=[labels[i] for i in order] if labels is not None else None,
        keys=[keys[i] for i in order] if keys is not None else None,
    )


def dropped_share(
    pos_scores: np.ndarray, window_scores: list[np.ndarray], rule: MiningRule
) -> float:
    """Share of window candidates a rule would drop (for calibration over a grid of rules)."""
    total = sum(len(scores) for scores in window_scores)
    if total == 0:
        return 0.0
    dropped = sum(
        int((scores > rule.threshold(float(pos))).sum())
        for pos, scores in zip(pos_scores, window_scores, strict=True)
    )
    return dropped / total
