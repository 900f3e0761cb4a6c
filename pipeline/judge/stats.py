"""Audit figures: false-negative rates with Wilson score intervals, by source and rank bucket.

The Wilson interval (Wilson, 1927) stays inside [0, 1] and keeps a sensible width for small
samples and rates near 0, where the normal approximation p ± z·sqrt(p(1-p)/n) does not:

    centre = (p + z²/2n) / (1 + z²/n),  half-width = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Z_95 = 1.959964
RANK_BUCKETS = ((0, 1), (1, 3), (3, 10), (10, 30), (30, 100), (100, None))
MAX_PLOT_POINTS = 5000


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes ({successes}) <= trials ({trials})")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rank_bucket(rank: int) -> str:
    """A teacher-rank bucket's label, e.g. `3-9` (ranks count from 0, the hardest)."""
    for low, high in RANK_BUCKETS:
        if high is None or rank < high:
            return (
                f"{low}+"
                if high is None
                else (str(low) if high == low + 1 else f"{low}-{high - 1}")
            )
    raise AssertionError("unreachable")


@dataclass
class RateCounter:
    """Verdict counts of one group of judged negatives."""

    verdicts: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: str) -> None:
        self.verdicts[verdict] += 1

    def to_dict(self) -> dict[str, Any]:
        positives = self.verdicts["positive"]
        decided = positives + self.verdicts["negative"]
        low, high = wilson_interval(positives, decided)
        return {
            "judged": sum(self.verdicts.values()),
            "positive": positives,
            "negative": self.verdicts["negative"],
            "unsure": self.verdicts["unsure"],
            "false_negative_rate": round(positives / decided, 4) if decided else None,
            "ci95": [round(low, 4), round(high, 4)] if decided else None,
        }


@dataclass
class AuditStats:
    """False-negative rate of the negatives as mined, overall, per source, per rank bucket,
    and the judge's agreement with the mining rule (re-applied to each negative's score)."""

    overall: RateCounter = field(default_factory=RateCounter)
    by_source: dict[str, RateCounter] = field(default_factory=dict)
    by_rank: dict[str, RateCounter] = field(default_factory=dict)
    unsure_reasons: Counter[str] = field(default_factory=Counter)
    by_judge: Counter[str] = field(default_factory=Counter)
    rule_vs_judge: Counter[str] = field(default_factory=Counter)
    points: list[tuple[int, float, str]] = field(default_factory=list)
    num_rows: int = 0

    def add(
        self,
        source: str,
        rank: int,
        verdict: str,
        score: float | None,
        judge: str,
        reason: str | None,
        rule_keeps: bool,
    ) -> None:
        self.overall.add(verdict)
        self.by_source.setdefault(source, RateCounter()).add(verdict)
        bucket = rank_bucket(rank)
        self.by_rank.setdefault(bucket, RateCounter()).add(verdict)
        self.by_judge[judge] += 1
        if verdict == "unsure":
            self.unsure_reasons[reason or "unknown"] += 1
        else:
            rule = "rule_negative" if rule_keeps else "rule_positive"
            self.rule_vs_judge[f"{rule}/judge_{verdict}"] += 1
        if score is not None and len(self.points) < MAX_PLOT_POINTS:
            self.points.append((rank, round(score, 4), verdict))

    def agreement(self) -> float | None:
        """Share of decided judgements where the rule and the judge agree."""
        decided = sum(self.rule_vs_judge.values())
        if not decided:
            return None
        agree = (
            self.rule_vs_judge["rule_negative/judge_negative"]
            + self.rule_vs_judge["rule_positive/judge_positive"]
        )
        return round(agree / decided, 4)

    def to_dict(self) -> dict[str, Any]:
        order = [rank_bucket(low) for low, _ in RANK_BUCKETS]
        return {
            "rows_judged": self.num_rows,
            "overall": self.overall.to_dict(),
            "by_source": {k: v.to_dict() for k, v in sorted(self.by_source.items())},
            "by_rank": {k: self.by_rank[k].to_dict() for k in order if k in self.by_rank},
            "unsure_reasons": dict(sorted(self.unsure_reasons.items())),
            "by_judge": dict(sorted(self.by_judge.items())),
            "rule_vs_judge": dict(sorted(self.rule_vs_judge.items())),
            "agreement_with_rule": self.agreement(),
            "score_vs_rank": {
                "ranks": [p[0] for p in self.points],
                "scores": [p[1] for p in self.points],
                "verdicts": [p[2] for p in self.points],
            },
        }
