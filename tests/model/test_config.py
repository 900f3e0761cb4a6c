from __future__ import annotations

import dataclasses
import json

import pytest

from embedcurate.model.config import StageConfig, TrainConfig, make_train_config


def test_a_config_survives_json_and_back() -> None:
    cfg = make_train_config("some/backbone", stages="both", max_steps=7)
    cfg = dataclasses.replace(
        cfg,
        embedder=dataclasses.replace(
            cfg.embedder,
            lora=dataclasses.replace(cfg.embedder.lora, target_modules=("q_proj", "v_proj")),
        ),
    )
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.embedder.lora.target_modules == ("q_proj", "v_proj")


def test_nv_embed_defaults_and_stage_differences() -> None:
    cfg = make_train_config("b", stages="1", max_steps=3)
    assert cfg.stages == (1,)
    assert (cfg.stage1.max_steps, cfg.stage2.max_steps) == (3, 3)
    lora, latent = cfg.embedder.lora, cfg.embedder.latent
    assert (lora.r, lora.alpha, lora.dropout) == (16, 32, 0.1)
    assert (latent.num_latents, latent.num_heads) == (512, 8)
    assert cfg.loss.temperature == 0.01
    assert cfg.stage1.in_batch_negatives
    assert not cfg.stage2.in_batch_negatives
    assert cfg.stage2.one_task_type_per_batch


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be positive"):
        StageConfig(stage=1, batch_size=0)
    with pytest.raises(ValueError, match="stage must be 1, 2 or both"):
        make_train_config("b", stages="3")
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({**make_train_config("b").to_dict(), "epochs": 3})
