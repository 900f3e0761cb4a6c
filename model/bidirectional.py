"""Bidirectional attention for decoder backbones (NV-Embed removes the causal mask).

How each structure loses its causal mask, as read in transformers 5.23 and checked by
`check_bidirectional` (tests/model/test_bidirectional.py runs it on every structure with both
sdpa and eager attention):

- Gemma 3 has a config flag, `use_bidirectional_attention=True`. It must be set before the
  model is built (the attention modules read it in `__init__`, and the config halves the
  sliding window into a symmetric one), so `config_kwargs` gives it to `from_pretrained`.
- Mistral, Llama, Qwen2 (and other decoders): the model passes a 4D mask through untouched
  (`masking_utils._preprocess_mask_arguments` returns any 4D tensor as is), so we hand it a
  (batch, 1, seq, seq) mask built from the padding mask alone: boolean for sdpa (which then
  runs with `is_causal=False` because a mask is given), additive for eager (0 for real keys,
  the dtype's minimum for padding).
  Setting `module.is_causal = False` alone is not enough: the model still builds a causal
  mask whenever padding is present or attention is eager.
- Encoders (BERT and kin, like the packaged MiniLM) are bidirectional already and get the
  usual 2D padding mask.

A structure we do not know gets the 4D mask too, and the probe at load refuses the model if
token 0 does not see later tokens, so no backbone silently trains causally.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import torch

logger = logging.getLogger(__name__)


class AttentionMode(StrEnum):
    ENCODER = "encoder"  # already bidirectional; 2D padding mask
    CONFIG_FLAG = "config-flag"  # Gemma 3: use_bidirectional_attention=True; 2D padding mask
    PADDING_4D = "padding-4d"  # any other decoder: additive 4D mask from the padding mask


ENCODER_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "mpnet",
        "distilbert",
        "deberta",
        "deberta-v2",
        "electra",
        "modernbert",
    }
)
FLAG_TYPES = frozenset({"gemma3_text"})


class CausalAttentionError(RuntimeError):
    """The backbone's first token does not see later tokens, or padding leaks in."""


def attention_mode(model_type: str) -> AttentionMode:
    if model_type in ENCODER_TYPES:
        return AttentionMode.ENCODER
    if model_type in FLAG_TYPES:
        return AttentionMode.CONFIG_FLAG
    return AttentionMode.PADDING_4D


def mode_for_config(config: Any) -> AttentionMode:
    """The mode for a built model's config; refuses a flag-type config built without its flag."""
    mode = attention_mode(config.model_type)
    if mode is AttentionMode.CONFIG_FLAG and not getattr(
        config, "use_bidirectional_attention", False
    ):
        raise ValueError(
            f"{config.model_type} config needs use_bidirectional_attention=True before the "
            "model is built; pass config_kwargs(model_type) when loading it"
        )
    return mode


def config_kwargs(model_type: str) -> dict[str, Any]:
    """Extra config kwargs for `from_pretrained` that make `model_type` bidirectional."""
    if attention_mode(model_type) is AttentionMode.CONFIG_FLAG:
        return {"use_bidirectional_attention": True}
    return {}


def padding_to_4d_mask(attention_mask: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """(batch, seq) 1/0 padding mask -> (batch, 1, seq, seq) mask with no causal part.

    `dtype=None` gives a boolean mask (True = attend), which sdpa takes whatever the compute
    dtype under autocast; a float dtype gives the additive form eager attention adds to its
    scores (0 for real keys, the dtype's minimum for padding).
    """
    batch, seq = attention_mask.shape
    real = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, seq) keys that are real
    if dtype is None:
        return real.expand(batch, 1, seq, seq)  # every query row sees every real key
    mask = torch.zeros(batch, 1, 1, seq, dtype=dtype, device=attention_mask.device)
    mask = mask.masked_fill(~real, torch.finfo(dtype).min)
    return mask.expand(batch, 1, seq, seq)


def backbone_attention_mask(
    model: torch.nn.Module, mode: AttentionMode, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The mask to hand the backbone's forward for `mode`."""
    if mode is not AttentionMode.PADDING_4D:
        return attention_mask
    implementation = getattr(model.config, "_attn_implementation", "eager")
    dtype = None if implementation == "sdpa" else mask_dtype(model)
    return padding_to_4d_mask(attention_mask, dtype)


def mask_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of the backbone's weights (an additive mask must match it)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


@torch.no_grad()
def check_bidirectional(
    model: torch.nn.Module, mode: AttentionMode, vocab_size: int, *, tolerance: float = 1e-6
) -> None:
    """Probe: token 0 must change when the last real token changes; padding must not leak.

    Runs two 6-token sequences (one padded by two positions) that differ only in their last
    real token, then the same with other ids in the padding. Raises CausalAttentionError.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        low = min(10, vocab_size - 8)  # stay clear of the usual special-token ids
        ids = torch.arange(low, low + 6, device=device).repeat(2, 1)  # (2, 6)
        ids[1, 3] = low + 6  # row 1 differs from row 0 at its last real token (position 3)
        attention = torch.ones_like(ids)
        attention[:, 4:] = 0  # positions 4 and 5 are padding
        first = _hidden(model, mode, ids, attention)  # (2, 6, hidden)
        token0_change = (first[0, 0] - first[1, 0]).abs().max().item()
        if token0_change <= tolerance:
            raise CausalAttentionError(
                f"attention is still causal ({mode} mode): token 0 did not change when token 3 did"
            )
        other_padding = ids.clone()
        other_padding[:, 4:] = low + 7
        second = _hidden(model, mode, other_padding, attention)
        leak = (first[:, :4] - second[:, :4]).abs().max().item()
        if leak > 1e-4:
            raise CausalAttentionError(f"padding leaks into real tokens ({mode} mode): {leak}")
        logger.debug("bidirectional probe passed (%s): token0 change %.3g", mode, token0_change)
    finally:
        model.train(was_training)


def _hidden(
    model: torch.nn.Module, mode: AttentionMode, ids: torch.Tensor, attention: torch.Tensor
) -> torch.Tensor:
    mask = backbone_attention_mask(model, mode, attention)
    return model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
