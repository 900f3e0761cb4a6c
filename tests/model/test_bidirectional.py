from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from embedcurate.model.backbone import load_backbone
from embedcurate.model.bidirectional import (
    AttentionMode,
    CausalAttentionError,
    backbone_attention_mask,
    check_bidirectional,
)
from embedcurate.model.config import BackboneConfig
from testkit.tiny import MINILM, TINY_STRUCTURES

CPU = torch.device("cpu")


def hidden_states(loaded, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    mask = backbone_attention_mask(loaded.model, loaded.mode, attention)
    with torch.no_grad():
        return loaded.model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("structure", TINY_STRUCTURES)
def test_token_zero_sees_later_tokens_and_padding_stays_masked(
    tiny_backbone: Callable[[str], Path], structure: str, attn: str
) -> None:
    loaded = load_backbone(
        BackboneConfig(str(tiny_backbone(structure)), attn_implementation=attn), CPU
    )
    expected = AttentionMode.CONFIG_FLAG if structure == "gemma3" else AttentionMode.PADDING_4D
    assert loaded.mode is expected
    if structure == "gemma3":  # the causal window of 16 became a symmetric one, as the flag means
        assert loaded.model.config.sliding_window == 16 // 2 + 1
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 0, 0], [101, 2000, 2001, 2002, 2999, 0, 0]])
    attention = (ids != 0).long()
    hidden = hidden_states(loaded, ids, attention)  # (2, 7, 64)
    # the rows differ only at position 4: with a causal mask positions 0..3 would be equal
    assert (hidden[0, 0] - hidden[1, 0]).abs().max() > 1e-4
    # other ids in the padding change nothing at real positions
    hidden_other_padding = hidden_states(loaded, ids.masked_fill(attention == 0, 1234), attention)
    torch.testing.assert_close(hidden[:, :5], hidden_other_padding[:, :5])
    # and a padded row equals the same row without padding
    unpadded = hidden_states(loaded, ids[:, :5], attention[:, :5])
    torch.testing.assert_close(hidden[:, :5], unpadded, atol=1e-5, rtol=1e-4)


def test_the_probe_catches_a_causal_decoder(tiny_backbone: Callable[[str], Path]) -> None:
    """The same Mistral with a plain 2D padding mask stays causal, and the probe says so."""
    loaded = load_backbone(BackboneConfig(str(tiny_backbone("mistral"))), CPU)
    with pytest.raises(CausalAttentionError, match="still causal"):
        check_bidirectional(loaded.model, AttentionMode.ENCODER, vocab_size=30522)


def test_is_causal_false_on_modules_alone_stays_causal(
    tiny_backbone: Callable[[str], Path],
) -> None:
    """Why we build a 4D mask: flipping the modules' flag is silently not enough."""
    loaded = load_backbone(
        BackboneConfig(str(tiny_backbone("llama")), attn_implementation="eager"), CPU
    )
    for module in loaded.model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    with pytest.raises(CausalAttentionError):
        check_bidirectional(loaded.model, AttentionMode.ENCODER, vocab_size=30522)


def test_an_encoder_keeps_its_two_dimensional_mask() -> None:
    loaded = load_backbone(BackboneConfig(MINILM), CPU)
    assert loaded.mode is AttentionMode.ENCODER
    attention = torch.ones(1, 4, dtype=torch.long)
    assert backbone_attention_mask(loaded.model, loaded.mode, attention) is attention
