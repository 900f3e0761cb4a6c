"""A cascade of two judges: the cheap one decides the clear cases, the expensive one the rest.

The cheap judge (a cross-encoder) answers every pair; only the pairs it is unsure of (its
score fell between its thresholds) go to the expensive judge (an LLM), whose own budget of
calls (`llm.max_calls`) bounds the cost: pairs beyond it stay `unsure` with the reason
`budget`. RLHN (arXiv 2505.16967) relabels false negatives with such a cascade.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedcurate.pipeline.judge.verdicts import Judge, Judgement, JudgePair, Verdict


class CascadeJudge:
    def __init__(self, cheap: Judge, expensive: Judge) -> None:
        self.cheap = cheap
        self.expensive = expensive
        self.name = f"cascade({cheap.name}->{expensive.name})"
        self.num_escalated = 0

    def judge(self, pairs: Sequence[JudgePair]) -> list[Judgement]:
        judgements = self.cheap.judge(pairs)
        unsure = [i for i, j in enumerate(judgements) if j.verdict is Verdict.UNSURE]
        if unsure:
            answers = self.expensive.judge([pairs[i] for i in unsure])
            for i, answer in zip(unsure, answers, strict=True):
                judgements[i] = answer
            self.num_escalated += len(unsure)
        return judgements
