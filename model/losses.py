"""InfoNCE over a row's positive, its hard negatives and, optionally, in-batch candidates.

For query q_i with positive p(i) and candidate set C_i, with cosine similarity s and a
temperature τ (NV-Embed, arXiv 2405.17428, section 3.3; τ = 0.01 by default):

    L = -(1/B) Σ_i log( exp(s(q_i, d_p(i)) / τ) / Σ_{j ∈ C_i} exp(s(q_i, d_j) / τ) )

C_i always holds p(i) and the row's own hard negatives. With in-batch negatives (stage 1)
it also holds every other row's positive and hard negatives, except

- candidates whose text equals row i's positive (a duplicate query or passage in the batch
  would otherwise be pushed away from itself; this also drops a hard negative that repeats
  the positive), and
- other rows' positives that share row i's label (same-label texts are never negatives), and
- row i's extra positives: texts a judge found relevant to q_i (the judge stage's relabel
  mode, RLHN arXiv 2505.16967), wherever they appear in the batch, own hard negatives included.

Stage 2 turns in-batch candidates off: NV-Embed found them misleading for classification and
clustering, where another row's positive is often of the query's own class. In-batch
accuracy is the share of rows whose positive scores highest in C_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar
    accuracy: torch.Tensor  # scalar, detached
    num_candidates: torch.Tensor  # (batch,) size of each row's candidate set


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.01, mask_same_text: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature
        self.mask_same_text = mask_same_text

    def forward(
        self,
        query_emb: torch.Tensor,  # (batch, dim)
        doc_emb: torch.Tensor,  # (num_docs, dim)
        doc_owner: torch.Tensor,  # (num_docs,) row index of each document
        positive_index: torch.Tensor,  # (batch,) document index of each row's positive
        *,
        in_batch: bool,
        doc_text_key: torch.Tensor | None = None,  # (num_docs,) equal keys = equal texts
        row_label_key: torch.Tensor | None = None,  # (batch,) -1 = no label
        extra_positive: torch.Tensor | None = None,  # (batch, num_docs) bool
    ) -> LossOutput:
        candidates = candidate_mask(
            doc_owner,
            positive_index,
            in_batch=in_batch,
            doc_text_key=doc_text_key if self.mask_same_text else None,
            row_label_key=row_label_key,
            extra_positive=extra_positive,
        )  # (batch, num_docs) bool
        scores = F.normalize(query_emb.float(), dim=-1) @ F.normalize(doc_emb.float(), dim=-1).T
        logits = (scores / self.temperature).masked_fill(~candidates, float("-inf"))
        loss = F.cross_entropy(logits, positive_index)
        accuracy = (logits.argmax(dim=-1) == positive_index).float().mean().detach()
        return LossOutput(loss=loss, accuracy=accuracy, num_candidates=candidates.sum(dim=-1))


def candidate_mask(
    doc_owner: torch.Tensor,
    positive_index: torch.Tensor,
    *,
    in_batch: bool,
    doc_text_key: torch.Tensor | None = None,
    row_label_key: torch.Tensor | None = None,
    extra_positive: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch, num_docs) True where document j is in row i's candidate set C_i."""
    batch = positive_index.shape[0]
    rows = torch.arange(batch, device=doc_owner.device).unsqueeze(1)  # (batch, 1)
    own = doc_owner.unsqueeze(0) == rows  # (batch, num_docs) the row's own documents
    allowed = torch.ones_like(own) if in_batch else own.clone()
    is_positive = torch.zeros_like(own)
    is_positive[torch.arange(batch), positive_index] = True
    if doc_text_key is not None:
        same_text = doc_text_key.unsqueeze(0) == doc_text_key[positive_index].unsqueeze(1)
        allowed &= ~(same_text & ~is_positive)
    if in_batch and row_label_key is not None:
        doc_is_a_positive = torch.zeros_like(doc_owner, dtype=torch.bool)
        doc_is_a_positive[positive_index] = True
        doc_label = row_label_key[doc_owner]  # (num_docs,) label of the row it came from
        same_label = (doc_label.unsqueeze(0) == row_label_key.unsqueeze(1)) & (
            row_label_key.unsqueeze(1) >= 0
        )
        allowed &= ~(same_label & doc_is_a_positive.unsqueeze(0) & ~own)
    if extra_positive is not None:
        allowed &= ~extra_positive.to(allowed.device)
    return allowed | is_positive
