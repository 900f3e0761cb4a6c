"""Which rows of each source enter the blend: caps, weights and a seed, deterministically.

Every candidate row gets a key, a hash of (seed, source, example_id). A source that must give
up rows keeps those with the smallest keys, in their original order. The choice of a row thus
depends only on its id, the seed and how many rows its source keeps, never on read order or
on the other rows, and a larger cap keeps a superset of a smaller one.

How many rows a source keeps: at most its `max_rows`; and when the blend caps a stage
(`output.max_rows_per_stage`), the stage's budget is shared among its sources in proportion to
their `weight`, a source that has fewer rows than its share passing the rest on to the others
(water-filling), so the budget is used whenever the sources have the rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Allotment:
    """Rows a source has after building, and how many of them it keeps."""

    available: int
    after_max_rows: int
    kept: int

    @property
    def over_max_rows(self) -> int:
        return self.available - self.after_max_rows

    @property
    def over_stage_budget(self) -> int:
        return self.after_max_rows - self.kept


def selection_key(seed: int, source: str, example_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{source}\x1f{example_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def choose_rows(example_ids: Sequence[str], keep: int, seed: int, source: str) -> np.ndarray:
    """Indices (ascending) of the `keep` rows with the smallest selection keys."""
    num_rows = len(example_ids)
    if keep >= num_rows:
        return np.arange(num_rows, dtype=np.int64)
    keys = np.fromiter(
        (selection_key(seed, source, example_id) for example_id in example_ids),
        dtype=np.uint64,
        count=num_rows,
    )
    # Stable sort: equal keys (only possible for equal ids) keep their file order.
    chosen = np.argsort(keys, kind="stable")[:keep]
    return np.sort(chosen)


def share_budget(
    available: Mapping[str, int], weights: Mapping[str, float], budget: int
) -> dict[str, int]:
    """Split `budget` rows among sources by weight, never giving one more than it has.

    Water-filling: each round, every unsaturated source's share is its weight's fraction of
    the budget left; sources that cannot fill their share keep all their rows and leave the
    round. What remains is floored per source, the rounding remainder going to the largest
    fractional parts (ties by name), so the counts add up to exactly min(budget, total).
    """
    if budget < 0:
        raise ValueError("budget must not be negative")
    result: dict[str, int] = {}
    active = {name for name, count in available.items() if count > 0}
    result.update({name: 0 for name in available if name not in active})
    left = budget
    while active:
        total_weight = sum(weights[name] for name in active)
        shares = {name: left * weights[name] / total_weight for name in active}
        saturated = {name for name in active if available[name] <= shares[name]}
        if not saturated:
            floors = {name: math.floor(shares[name]) for name in active}
            remainder = left - sum(floors.values())
            by_fraction = sorted(active, key=lambda n: (-(shares[n] - floors[n]), n))
            for name in by_fraction[:remainder]:
                floors[name] += 1
            result.update(floors)
            break
        for name in saturated:
            result[name] = available[name]
            left -= available[name]
        active -= saturated
    return result


def allot_rows(
    available: Mapping[str, int],
    max_rows: Mapping[str, int | None],
    weights: Mapping[str, float],
    stage_of: Mapping[str, int],
    stage_budgets: Mapping[int, int],
) -> dict[str, Allotment]:
    """Rows each source keeps: its own cap first, then its stage's weighted budget."""
    capped = {
        name: count if max_rows.get(name) is None else min(count, int(max_rows[name] or 0))
        for name, count in available.items()
    }
    kept = dict(capped)
    for stage, budget in stage_budgets.items():
        members = {name: capped[name] for name in capped if stage_of[name] == stage}
        if sum(members.values()) > budget:
            kept.update(share_budget(members, weights, budget))
    return {
        name: Allotment(available=available[name], after_max_rows=capped[name], kept=kept[name])
        for name in available
    }
