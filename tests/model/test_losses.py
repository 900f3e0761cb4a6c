from __future__ import annotations

import math

import pytest
import torch

from embedcurate.model.losses import InfoNCELoss, candidate_mask

# Two rows, each with a positive and one hard negative; documents flattened row by row:
# d0 = row 0's positive, d1 = row 0's negative, d2 = row 1's positive, d3 = row 1's negative.
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
DOCS = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
OWNER = torch.tensor([0, 0, 1, 1])
POSITIVE = torch.tensor([0, 2])
TAU = 0.1


def hand_loss(candidates: list[list[int]]) -> float:
    """-(1/B) Σ_i log softmax over row i's candidates, cosines written out by hand."""
    # cosines (all vectors have unit length): row 0 -> [0.8, 0.6, 0.0, 1.0]; row 1 -> [0.6,
    # 0.8, 1.0, 0.0]
    cos = [[0.8, 0.6, 0.0, 1.0], [0.6, 0.8, 1.0, 0.0]]
    total = 0.0
    for row, positive in enumerate([0, 2]):
        denominator = sum(math.exp(cos[row][j] / TAU) for j in candidates[row])
        total += -math.log(math.exp(cos[row][positive] / TAU) / denominator)
    return total / 2


def test_loss_without_in_batch_candidates_equals_the_hand_computed_value() -> None:
    out = InfoNCELoss(TAU)(QUERIES, DOCS, OWNER, POSITIVE, in_batch=False)
    expected = hand_loss([[0, 1], [2, 3]])
    # row 0: -log(e^8 / (e^8 + e^6)); row 1: -log(e^10 / (e^10 + e^0))
    assert expected == pytest.approx((math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-10.0))) / 2)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.accuracy.item() == 1.0
    assert out.num_candidates.tolist() == [2, 2]


def test_in_batch_candidates_add_the_other_rows_documents() -> None:
    loss_fn = InfoNCELoss(TAU)
    with_batch = loss_fn(QUERIES, DOCS, OWNER, POSITIVE, in_batch=True)
    assert with_batch.loss.item() == pytest.approx(hand_loss([[0, 1, 2, 3]] * 2), rel=1e-5)
    # row 0's in-batch candidate d3 (cosine 1.0) beats its positive (0.8)
    assert with_batch.accuracy.item() == 0.5
    assert with_batch.num_candidates.tolist() == [4, 4]
    without = loss_fn(QUERIES, DOCS, OWNER, POSITIVE, in_batch=False)
    assert with_batch.loss.item() > without.loss.item()


def test_candidates_with_the_positives_text_are_masked() -> None:
    # d3 has the same text as row 0's positive d0 (e.g. a duplicated passage in the batch)
    text_key = torch.tensor([7, 8, 9, 7])
    out = InfoNCELoss(TAU)(QUERIES, DOCS, OWNER, POSITIVE, in_batch=True, doc_text_key=text_key)
    assert out.loss.item() == pytest.approx(hand_loss([[0, 1, 2], [0, 1, 2, 3]]), rel=1e-5)
    unmasked = InfoNCELoss(TAU, mask_same_text=False)(
        QUERIES, DOCS, OWNER, POSITIVE, in_batch=True, doc_text_key=text_key
    )
    assert unmasked.loss.item() == pytest.approx(hand_loss([[0, 1, 2, 3]] * 2), rel=1e-5)


def test_same_label_positives_are_not_in_batch_negatives() -> None:
    labels = torch.tensor([3, 3])
    mask = candidate_mask(OWNER, POSITIVE, in_batch=True, row_label_key=labels)
    # each row loses the other row's positive, keeps the other row's negative
    assert mask.tolist() == [[True, True, False, True], [False, True, True, True]]
    other_labels = candidate_mask(
        OWNER, POSITIVE, in_batch=True, row_label_key=torch.tensor([3, 4])
    )
    assert other_labels.all()
    unlabelled = candidate_mask(
        OWNER, POSITIVE, in_batch=True, row_label_key=torch.tensor([-1, -1])
    )
    assert unlabelled.all()


def test_loss_gradient_flows_to_both_sides() -> None:
    queries = QUERIES.clone().requires_grad_()
    docs = DOCS.clone().requires_grad_()
    InfoNCELoss(TAU)(queries, docs, OWNER, POSITIVE, in_batch=True).loss.backward()
    assert queries.grad is not None
    assert docs.grad is not None
    assert queries.grad.abs().sum() > 0
    assert docs.grad.abs().sum() > 0


def test_a_rows_extra_positives_are_never_its_negatives_in_batch_or_own() -> None:
    # a judge relabelled d3 (row 1's negative) as a positive of row 0, and d2 (row 1's
    # positive) as one of row 1... which is its positive already and must stay its target
    extra = torch.tensor([[False, False, False, True], [False, False, True, False]])
    mask = candidate_mask(OWNER, POSITIVE, in_batch=True, extra_positive=extra)
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    out = InfoNCELoss(TAU)(QUERIES, DOCS, OWNER, POSITIVE, in_batch=True, extra_positive=extra)
    assert out.loss.item() == pytest.approx(hand_loss([[0, 1, 2], [0, 1, 2, 3]]), rel=1e-5)
    own = torch.tensor([[False, True, False, False], [False, False, False, False]])
    assert candidate_mask(OWNER, POSITIVE, in_batch=False, extra_positive=own).tolist() == [
        [True, False, False, False],
        [False, False, True, True],
    ]
