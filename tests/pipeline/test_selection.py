from __future__ import annotations

import pytest

from embedcurate.pipeline.sources.budgets import allot_rows, choose_rows, share_budget


def test_choose_rows_is_seeded_order_free_and_nested() -> None:
    ids = [f"ex-{i}" for i in range(200)]
    chosen = choose_rows(ids, 50, seed=3, source="s")
    assert len(chosen) == 50
    assert list(chosen) == sorted(chosen)
    assert list(chosen) == list(choose_rows(ids, 50, seed=3, source="s"))
    reversed_pick = choose_rows(ids[::-1], 50, seed=3, source="s")
    assert {ids[::-1][i] for i in reversed_pick} == {ids[i] for i in chosen}
    assert set(chosen) <= set(choose_rows(ids, 80, seed=3, source="s"))
    assert set(chosen) != set(choose_rows(ids, 50, seed=4, source="s"))
    assert list(choose_rows(ids, 500, seed=3, source="s")) == list(range(200))


def test_budget_is_shared_by_weight_and_passed_on_by_small_sources() -> None:
    shares = share_budget({"a": 1000, "b": 1000, "c": 10}, {"a": 1, "b": 3, "c": 1}, 410)
    assert shares["c"] == 10  # its share (82) is more than it has
    assert shares == {"a": 100, "b": 300, "c": 10}
    assert sum(share_budget({"a": 7, "b": 7, "c": 7}, {"a": 1, "b": 1, "c": 1}, 10).values()) == 10


@pytest.mark.parametrize("budget", [0, 1, 5, 33, 99, 150])
def test_shares_add_up_to_the_budget_and_never_exceed_what_a_source_has(budget: int) -> None:
    available = {"a": 40, "b": 25, "c": 60, "d": 0}
    weights = {"a": 0.5, "b": 2.0, "c": 1.0, "d": 1.0}
    shares = share_budget(available, weights, budget)
    assert sum(shares.values()) == min(budget, sum(available.values()))
    assert all(0 <= shares[name] <= available[name] for name in available)


def test_allot_applies_max_rows_then_the_stage_budget_of_that_stage_only() -> None:
    allotments = allot_rows(
        available={"r1": 100, "r2": 100, "c": 30},
        max_rows={"r1": 60, "r2": None, "c": None},
        weights={"r1": 1.0, "r2": 1.0, "c": 1.0},
        stage_of={"r1": 1, "r2": 1, "c": 2},
        stage_budgets={1: 100},
    )
    assert allotments["r1"].over_max_rows == 40
    assert (allotments["r1"].kept, allotments["r2"].kept) == (50, 50)
    assert allotments["r2"].over_stage_budget == 50
    assert allotments["c"].kept == 30
