from __future__ import annotations

import math

import numpy as np
import pytest

from embedcurate.pipeline.mining.rules import (
    Candidates,
    MiningRule,
    SelectionConfig,
    dropped_share,
    eligible_positions,
    exclusion_for,
    merge_given,
    query_rng,
    select_negatives,
)


def ranked(scores: list[float], labels: list[str | None] | None = None) -> Candidates:
    return Candidates(
        ids=[f"d{i}" for i in range(len(scores))],
        texts=[f"document number {i}" for i in range(len(scores))],
        scores=np.asarray(scores, dtype=np.float32),
        labels=labels,
    )


NO_POSITIVES = exclusion_for([], [])


@pytest.mark.parametrize(
    ("rule", "pos", "expected"),
    [
        ("percpos:0.95", 0.8, 0.76),
        ("percpos:0.9", -0.5, -0.55),  # stays below a negative positive score
        ("marginpos:0.1", 0.8, 0.7),
        ("abs:0.6", 0.99, 0.6),
        ("none", 0.8, math.inf),
    ],
)
def test_rule_thresholds(rule: str, pos: float, expected: float) -> None:
    assert MiningRule.parse(rule).threshold(pos) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["percpos", "percpos:1.5", "topk:3", "abs:x", "percpos:0"])
def test_bad_rules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"rule|P must"):
        MiningRule.parse(bad)


def test_rule_text_round_trips() -> None:
    assert str(MiningRule.parse("percpos:0.95")) == "percpos:0.95"
    assert str(MiningRule.parse("none")) == "none"


def test_percpos_drops_candidates_above_the_positive_share() -> None:
    candidates = ranked([0.9, 0.85, 0.7, 0.6, 0.5, 0.4])
    cfg = SelectionConfig(rule=MiningRule.parse("percpos:0.95"), num_negatives=3, range_max=10)
    selection = select_negatives(candidates, NO_POSITIVES, 0.8, cfg, "ex")
    # threshold 0.76: 0.9 and 0.85 are likely false negatives
    assert selection.ids == ["d2", "d3", "d4"]
    assert selection.ranks == [2, 3, 4]
    assert selection.num_in_window == 6
    assert selection.num_dropped_by_rule == 2
    assert selection.scores == pytest.approx([0.7, 0.6, 0.5])


def test_positives_by_id_and_by_text_are_excluded_and_do_not_take_ranks() -> None:
    candidates = Candidates(
        ids=["pos-a", "x1", "x2", "x3", "x4"],
        texts=["The answer.", "THE  answer!", "other one", "third", "fourth"],
        scores=np.asarray([0.9, 0.88, 0.5, 0.4, 0.3], dtype=np.float32),
    )
    exclusion = exclusion_for(["pos-a", "pos-b"], ["The answer."])
    cfg = SelectionConfig(rule=MiningRule.parse("none"), num_negatives=2, range_max=10)
    selection = select_negatives(candidates, exclusion, 0.9, cfg, "ex")
    assert selection.ids == ["x2", "x3"]
    assert selection.ranks == [0, 1]


def test_same_label_candidates_are_never_negatives() -> None:
    candidates = ranked([0.9, 0.8, 0.7, 0.6], labels=["sport", "food", "sport", "space"])
    exclusion = exclusion_for([], [], label="sport")
    assert eligible_positions(candidates, exclusion) == [1, 3]


def test_duplicate_texts_collapse_to_the_hardest_copy() -> None:
    candidates = Candidates(
        ids=["a", "b", "c", "d"],
        texts=["Same text.", "same   TEXT", "different", "Same text!"],
        scores=np.asarray([0.7, 0.6, 0.5, 0.4], dtype=np.float32),
    )
    assert eligible_positions(candidates, NO_POSITIVES) == [0, 2]


def test_window_limits_the_ranks_considered() -> None:
    candidates = ranked([0.9 - 0.05 * i for i in range(10)])
    cfg = SelectionConfig(rule=MiningRule.parse("none"), num_negatives=5, range_min=2, range_max=5)
    selection = select_negatives(candidates, NO_POSITIVES, 1.0, cfg, "ex")
    assert selection.ranks == [2, 3, 4]
    assert selection.num_in_window == 3


def test_random_sampling_depends_only_on_seed_and_example_id() -> None:
    candidates = ranked([0.9 - 0.01 * i for i in range(40)])
    cfg = SelectionConfig(
        rule=MiningRule.parse("none"), num_negatives=4, range_max=40, sampling="random", seed=7
    )
    first = select_negatives(candidates, NO_POSITIVES, 1.0, cfg, "row-1")
    again = select_negatives(candidates, NO_POSITIVES, 1.0, cfg, "row-1")
    other_row = select_negatives(candidates, NO_POSITIVES, 1.0, cfg, "row-2")
    other_seed = select_negatives(
        candidates, NO_POSITIVES, 1.0, SelectionConfig(**{**cfg.__dict__, "seed": 8}), "row-1"
    )
    assert first.ids == again.ids
    assert first.ids != other_row.ids  # another row draws its own sample
    assert first.ids != other_seed.ids  # and so does another seed
    assert first.ranks == sorted(first.ranks)  # hardest first
    assert first.scores == sorted(first.scores, reverse=True)
    assert len(set(first.ids)) == 4
    assert query_rng(7, "row-1").random() == query_rng(7, "row-1").random()


def test_too_few_survivors_returns_what_there_is() -> None:
    candidates = ranked([0.95, 0.9, 0.5])
    cfg = SelectionConfig(rule=MiningRule.parse("percpos:0.95"), num_negatives=3, range_max=10)
    selection = select_negatives(candidates, NO_POSITIVES, 0.9, cfg, "ex")
    assert selection.ids == ["d2"]


def test_given_negatives_are_ranked_and_ruled_with_the_retrieved() -> None:
    retrieved = ranked([0.7, 0.5])
    merged = merge_given(
        retrieved,
        ["generated hard negative", "too close to the positive"],
        np.asarray([0.6, 0.95], dtype=np.float32),
        ["given:1", "given:2"],
    )
    assert list(merged.ids) == ["given:2", "d0", "given:1", "d1"]
    cfg = SelectionConfig(rule=MiningRule.parse("percpos:0.95"), num_negatives=3, range_max=10)
    selection = select_negatives(merged, NO_POSITIVES, 0.9, cfg, "ex")
    assert selection.ids == ["d0", "given:1", "d1"]
    assert selection.num_dropped_by_rule == 1


def test_dropped_share_over_a_grid() -> None:
    pos = np.asarray([0.8, 0.5])
    window = [np.asarray([0.79, 0.7, 0.1]), np.asarray([0.6, 0.2])]
    assert dropped_share(pos, window, MiningRule.parse("percpos:0.95")) == pytest.approx(2 / 5)
    assert dropped_share(pos, window, MiningRule.parse("abs:0.65")) == pytest.approx(2 / 5)
    assert dropped_share(pos, window, MiningRule.parse("none")) == 0.0
