"""NV-Embed's latent-attention layer: the decoder's hidden states read a trainable dictionary.

NV-Embed (arXiv 2405.17428, section 3.2) pools with cross-attention in which the last hidden
states Q (seq x d) are the queries and a trainable latent array L (r x d, r = 512) gives the
keys and values, followed by an MLP and mean pooling:

    H' = H + W_o · MultiHead(q = LN(H), k = v = LN(L))      # (batch, seq, d)
    O  = H' + W_2 · GEGLU(W_1 · LN(H'))                     # (batch, seq, d)
    e  = mean of O over the pooled tokens                   # (batch, d)

Both residual branches end in a zero-initialised projection (W_o, W_2), so before training
the layer is the identity and the embedding equals the backbone's mean-pooled one: a short
run starts from the backbone, never below it. The gradient still reaches W_o and W_2 on the
first step, and the rest of the layer from the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embedcurate.model.config import LatentAttentionConfig


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020): x, gate = split(W x); x * gelu(gate)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class LatentAttention(nn.Module):
    def __init__(self, hidden_size: int, cfg: LatentAttentionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim or hidden_size // cfg.num_heads
        inner = self.num_heads * self.head_dim
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, hidden_size))  # (r, d)
        self.norm_hidden = nn.LayerNorm(hidden_size)
        self.norm_latents = nn.LayerNorm(hidden_size)
        self.to_q = nn.Linear(hidden_size, inner, bias=False)
        self.to_kv = nn.Linear(hidden_size, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden_size, bias=False)
        ff_inner = cfg.ff_multiplier * hidden_size
        self.ff = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, 2 * ff_inner),
            GEGLU(),
            nn.Linear(ff_inner, hidden_size),
        )
        self.reset_residual_branches()

    def reset_residual_branches(self) -> None:
        """Zero the last projection of each residual branch: the layer starts as the identity."""
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.ff[-1].weight)
        nn.init.zeros_(self.ff[-1].bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, seq, d) hidden states -> (batch, seq, d); padding rows are left to pooling."""
        batch, seq, _ = hidden.shape
        hidden = hidden.to(self.latents.dtype)
        q = self.to_q(self.norm_hidden(hidden))  # (batch, seq, heads*head_dim)
        q = q.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # (b, h, seq, hd)
        k, v = self.to_kv(self.norm_latents(self.latents)).chunk(2, dim=-1)  # (r, h*hd) each
        k = k.view(-1, self.num_heads, self.head_dim).transpose(0, 1).unsqueeze(0)  # (1,h,r,hd)
        v = v.view(-1, self.num_heads, self.head_dim).transpose(0, 1).unsqueeze(0)  # (1,h,r,hd)
        k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, seq, head_dim)
        attended = attended.transpose(1, 2).reshape(batch, seq, -1)  # (batch, seq, h*hd)
        hidden = hidden + self.to_out(attended)
        return hidden + self.ff(hidden)


def masked_mean(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where `pool_mask` is 1: (batch, seq, d), (batch, seq) -> (batch, d)."""
    weights = pool_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
