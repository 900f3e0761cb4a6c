from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from embedcurate.model.bidirectional import backbone_attention_mask
from embedcurate.model.config import BackboneConfig, EmbedderConfig
from embedcurate.model.embedder import Embedder, build_embedder, instructed_query
from embedcurate.model.io import load_embedder, save_embedder
from embedcurate.pipeline.blend import TeacherConfig
from embedcurate.pipeline.mining.teacher import load_teacher
from testkit.tiny import MINILM, TINY_STRUCTURES, tiny_embedder_config

CPU = torch.device("cpu")
TEXTS = [
    "Glaciers carve valleys.",
    "Honey bees pollinate flowers and store nectar as honey in their hives.",
    "Rust",
]


def backbone_mean(embedder: Embedder, texts: list[str], chars: list[int]) -> torch.Tensor:
    """Mean of the bare backbone's last hidden states over the pool mask, by hand."""
    tokens = embedder.tokenize(texts, chars, max_length=64)
    backbone = embedder.backbone
    mask = backbone_attention_mask(backbone, embedder.mode, tokens.attention_mask)
    with torch.no_grad():
        hidden = backbone(input_ids=tokens.input_ids, attention_mask=mask).last_hidden_state
    weights = tokens.pool_mask.unsqueeze(-1).float()  # (batch, seq, 1)
    mean = (hidden * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1)


@pytest.mark.parametrize("structure", TINY_STRUCTURES)
def test_untrained_embedder_reproduces_the_backbones_mean_pooling(
    tiny_backbone: Callable[[str], Path], structure: str
) -> None:
    embedder = build_embedder(tiny_embedder_config(tiny_backbone(structure)), device=CPU)
    embeddings = embedder.encode(TEXTS, max_length=64)
    assert embeddings.shape == (3, 64)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    expected = backbone_mean(embedder, TEXTS, [0, 0, 0]).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # the identity comes from the zeroed residual projections, not from a disconnected layer
    assert embedder.latent is not None
    torch.nn.init.normal_(embedder.latent.to_out.weight, std=0.5)
    assert np.abs(embedder.encode(TEXTS, max_length=64) - expected).max() > 1e-3


def test_forward_shapes_and_trainable_parts(tiny_backbone: Callable[[str], Path]) -> None:
    embedder = build_embedder(tiny_embedder_config(tiny_backbone("qwen2")), device=CPU)
    tokens = embedder.tokenize(TEXTS, [0, 0, 0], max_length=8)
    assert tokens.input_ids.shape == (3, 8)
    out = embedder.embed(tokens)
    assert out.shape == (3, 64)
    assert out.dtype == torch.float32
    trainable = {n for n, p in embedder.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any(n.startswith("latent.") for n in trainable)
    assert not any(n.endswith("embed_tokens.weight") for n in trainable)


def test_untrained_minilm_embedder_matches_the_pipeline_teacher() -> None:
    cfg = EmbedderConfig(backbone=BackboneConfig(MINILM), max_doc_length=256)
    embedder = build_embedder(cfg, device=CPU)
    teacher = load_teacher(TeacherConfig(device="cpu", dtype="float32", max_length=256))
    np.testing.assert_allclose(embedder.encode(TEXTS), teacher.encode(TEXTS), atol=1e-5)


def test_instruction_tokens_steer_attention_but_are_not_pooled(
    tiny_backbone: Callable[[str], Path],
) -> None:
    embedder = build_embedder(tiny_embedder_config(tiny_backbone("mistral")), device=CPU)
    text, chars = instructed_query("Given a question, retrieve passages", "do bees sleep")
    pooled = embedder.encode([text], [chars], max_length=64)
    np.testing.assert_allclose(pooled, backbone_mean(embedder, [text], [chars]).numpy(), atol=1e-5)
    everything = backbone_mean(embedder, [text], [0]).numpy()
    assert np.abs(pooled - everything).max() > 1e-3  # instruction tokens were left out
    other, other_chars = instructed_query("Classify the topic of the text", "do bees sleep")
    steered = embedder.encode([other], [other_chars], max_length=64)
    assert np.abs(pooled - steered).max() > 1e-4  # yet the instruction changes the embedding


def test_save_then_load_gives_identical_embeddings(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    embedder = build_embedder(tiny_embedder_config(tiny_backbone("gemma3")), device=CPU)
    torch.manual_seed(5)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for param in embedder.trainable_parameters():
            param.add_(torch.randn_like(param) * 0.05)
    before = embedder.encode(TEXTS, max_length=64)
    assert np.abs(before - backbone_mean(embedder, TEXTS, [0, 0, 0]).numpy()).max() > 1e-3
    save_embedder(embedder, tmp_path / "saved")
    assert (tmp_path / "saved" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "saved" / "latent_attention.safetensors").is_file()
    reloaded = load_embedder(tmp_path / "saved", device=CPU)
    np.testing.assert_array_equal(reloaded.encode(TEXTS, max_length=64), before)
    assert reloaded.cfg == embedder.cfg


def test_a_saved_run_needs_its_adapter(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = tiny_embedder_config(tiny_backbone("llama"))
    save_embedder(build_embedder(cfg, device=CPU), tmp_path / "saved")
    (tmp_path / "saved" / "latent_attention.safetensors").unlink()
    with pytest.raises(FileNotFoundError):
        load_embedder(tmp_path / "saved", device=CPU)
    no_latent = dataclasses.replace(cfg, latent=dataclasses.replace(cfg.latent, enabled=False))
    assert build_embedder(no_latent, device=CPU).latent is None
