"""What every judge returns: a verdict and a score per (query, candidate), and the protocol.

A judge answers `positive` (the candidate answers the query: a false negative), `negative`
or `unsure`. `unsure` always carries a reason (`band`: the score fell between the
thresholds; `error`: the call failed; `unparsed`: the answer was not the expected JSON;
`budget`: the cascade's call budget was spent), so nothing a judge could not decide is ever
passed off as a negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from embedcurate.pipeline.errors import EmbedCurateError


class JudgeError(EmbedCurateError):
    """A judge that cannot run at all (a model that is not a reranker, a missing prompt)."""


class Verdict(StrEnum):
    NEGATIVE = "negative"
    POSITIVE = "positive"
    UNSURE = "unsure"


@dataclass(frozen=True)
class JudgePair:
    """One question to a judge: is `candidate` relevant to `query` under `task`?"""

    task: str
    query: str
    candidate: str


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    score: float | None  # the judge's relevance score in [0, 1] where it has one
    judge: str  # name of the judge that decided
    reason: str | None = None  # why unsure

    @classmethod
    def unsure(cls, judge: str, reason: str, score: float | None = None) -> Judgement:
        return cls(Verdict.UNSURE, score, judge, reason)


class Judge(Protocol):
    """Anything that judges pairs in order; it may batch or cache however it likes."""

    name: str

    def judge(self, pairs: Sequence[JudgePair]) -> list[Judgement]: ...


def verdict_from_score(
    score: float, positive_threshold: float, negative_threshold: float, judge: str
) -> Judgement:
    """Scores at or above the positive threshold are positives, at or below the negative one
    negatives; the band between is unsure (a cascade sends it to a stronger judge)."""
    if score >= positive_threshold:
        return Judgement(Verdict.POSITIVE, score, judge)
    if score <= negative_threshold:
        return Judgement(Verdict.NEGATIVE, score, judge)
    return Judgement.unsure(judge, "band", score)
