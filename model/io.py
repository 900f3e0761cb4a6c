"""Save and load a trained embedder: LoRA adapter and latent layer in safetensors, plus config.

A saved model folder holds

    embedder.json                 EmbedderConfig (backbone name, sizes, LoRA, latent layer)
    adapter/adapter_model.safetensors, adapter/adapter_config.json    (peft, when LoRA is on)
    latent_attention.safetensors  (when the latent layer is on)

The backbone's own weights are not copied: they are reloaded from the name in embedder.json
(packaged names resolve on any machine; `backbone=` overrides a path that moved). A training
run folder holds one such folder per finished stage (`stage1/`, `stage2/`); loading the run
folder loads its last stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from embedcurate.model.config import EmbedderConfig, from_dict, to_dict
from embedcurate.model.embedder import Embedder, build_embedder

logger = logging.getLogger(__name__)

CONFIG_NAME = "embedder.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LATENT_NAME = "latent_attention.safetensors"
STAGE_DIRS = ("stage2", "stage1")  # newest first
FORMAT = 1


def save_embedder(embedder: Embedder, out_dir: str | Path) -> Path:
    """Write the trainable parts and the config into `out_dir` (replaced atomically)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    payload = {"format": FORMAT, "config": to_dict(embedder.cfg)}
    (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if _has_lora(embedder):
        embedder.backbone.save_pretrained(tmp / ADAPTER_DIR)  # peft: adapter weights + config
    if embedder.latent is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in embedder.latent.state_dict().items()}
        save_file(state, tmp / LATENT_NAME)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


def load_weights(embedder: Embedder, model_dir: str | Path) -> None:
    """Copy a saved folder's adapter and latent weights into an embedder of the same config."""
    model_dir = Path(model_dir)
    if _has_lora(embedder):
        from peft import set_peft_model_state_dict

        adapter = load_file(model_dir / ADAPTER_DIR / ADAPTER_WEIGHTS)
        result = set_peft_model_state_dict(embedder.backbone, adapter)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"{model_dir}: adapter has unexpected weights {unexpected[:3]}")
    if embedder.latent is not None:
        embedder.latent.load_state_dict(load_file(model_dir / LATENT_NAME, device="cpu"))


def resolve_model_dir(path: str | Path) -> Path:
    """A saved model folder, or a run folder's last finished stage."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    for stage_dir in STAGE_DIRS:
        if (path / stage_dir / CONFIG_NAME).is_file():
            return path / stage_dir
    raise FileNotFoundError(f"{path}: no {CONFIG_NAME} here nor in {' or '.join(STAGE_DIRS)}/")


def read_embedder_config(model_dir: str | Path) -> EmbedderConfig:
    path = Path(model_dir) / CONFIG_NAME
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: format {payload.get('format')} is not {FORMAT}")
    return from_dict(EmbedderConfig, payload["config"])


def load_embedder(
    path: str | Path, *, device: torch.device | None = None, backbone: str | None = None
) -> Embedder:
    """Rebuild a saved embedder (or a run's last stage) in eval mode.

    `backbone` replaces the recorded backbone location (same model, another path).
    """
    model_dir = resolve_model_dir(path)
    cfg = read_embedder_config(model_dir)
    if backbone is not None:
        cfg = dataclasses.replace(
            cfg, backbone=dataclasses.replace(cfg.backbone, name_or_path=backbone)
        )
    embedder = build_embedder(cfg, device=device)
    load_weights(embedder, model_dir)
    embedder.requires_grad_(False)
    logger.info("loaded embedder from %s", model_dir)
    return embedder.eval()


def _has_lora(embedder: Embedder) -> bool:
    return hasattr(embedder.backbone, "peft_config")
