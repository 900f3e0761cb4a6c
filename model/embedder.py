"""The embedder: bidirectional backbone (+ LoRA) -> latent attention -> instruction-masked mean.

    tokens (batch, seq) ─► backbone, no causal mask ─► hidden (batch, seq, d)
                        ─► latent attention (identity at init) ─► (batch, seq, d)
                        ─► mean over real tokens outside the instruction ─► (batch, d)

Instruction tokens are read by attention (they steer the embedding) but left out of the
pooled mean (NV-Embed, section 3.3). Encoders such as the packaged MiniLM go through the same
path, so an untrained embedder over MiniLM reproduces MiniLM's sentence embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from embedcurate.model.backbone import LoadedBackbone, load_backbone, pick_device
from embedcurate.model.bidirectional import AttentionMode, backbone_attention_mask
from embedcurate.model.config import EmbedderConfig, LoraSettings
from embedcurate.model.data import TokenBatch, tokenize
from embedcurate.model.latent_attention import LatentAttention, masked_mean
from embedcurate.pipeline.instructions import render

logger = logging.getLogger(__name__)

DEFAULT_RETRIEVAL_INSTRUCTION = "Given a query, retrieve relevant passages that answer the query"


def instructed_query(instruction: str | None, query: str) -> tuple[str, int]:
    """(`Instruct: {instruction}\\nQuery: {query}`, length of the prefix); no prefix if None.

    The same template as the train shards (pipeline.instructions.render).
    """
    rendered = render(instruction or "", query)
    return rendered.text, rendered.instruction_chars


class Embedder(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        mode: AttentionMode,
        hidden_size: int,
        cfg: EmbedderConfig,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.mode = mode
        self.cfg = cfg
        self.hidden_size = hidden_size
        self.latent = LatentAttention(hidden_size, cfg.latent) if cfg.latent.enabled else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        """(batch, seq) ids and masks -> (batch, d) float32 embeddings (not normalised)."""
        mask = backbone_attention_mask(self.backbone, self.mode, attention_mask)
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.latent is not None:
            hidden = self.latent(hidden)  # (batch, seq, d)
        return masked_mean(hidden.float(), pool_mask)

    def embed(self, tokens: TokenBatch) -> torch.Tensor:
        tokens = tokens.to(self.device)
        return self(tokens.input_ids, tokens.attention_mask, tokens.pool_mask)

    def tokenize(
        self, texts: Sequence[str], instruction_chars: Sequence[int], *, max_length: int
    ) -> TokenBatch:
        return tokenize(self.tokenizer, texts, instruction_chars, max_length)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        instruction_chars: Sequence[int] | None = None,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """(len(texts), d) L2-normalised float32 embeddings in input order.

        Texts are batched longest first, so each batch pads to similar lengths.
        """
        chars = list(instruction_chars) if instruction_chars is not None else [0] * len(texts)
        max_length = max_length or self.cfg.max_doc_length
        was_training = self.training
        self.eval()
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch")
        try:
            for start in starts:
                index = order[start : start + batch_size]
                tokens = self.tokenize(
                    [texts[i] for i in index], [chars[i] for i in index], max_length=max_length
                )
                emb = F.normalize(self.embed(tokens), dim=-1)
                out[index] = emb.cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def encode_queries(
        self, queries: Sequence[str], instruction: str | None, **options: object
    ) -> np.ndarray:
        templated = [instructed_query(instruction, q) for q in queries]
        return self.encode(
            [text for text, _ in templated],
            [chars for _, chars in templated],
            max_length=self.cfg.max_query_length,
            **options,  # type: ignore[arg-type]
        )

    def encode_documents(self, docs: Sequence[str], **options: object) -> np.ndarray:
        return self.encode(docs, max_length=self.cfg.max_doc_length, **options)  # type: ignore[arg-type]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def apply_lora(backbone: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap the backbone with peft LoRA adapters; its own weights are frozen."""
    from peft import LoraConfig, get_peft_model

    target = (
        settings.target_modules
        if isinstance(settings.target_modules, str)
        else list(settings.target_modules)
    )
    names = [name for name, _ in backbone.named_modules()]
    exclude = [  # only those present: peft warns about an exclusion that matches nothing
        suffix
        for suffix in settings.exclude_modules
        if any(name == suffix or name.endswith(f".{suffix}") for name in names)
    ]
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target,
        exclude_modules=exclude or None,
        bias="none",
    )
    return get_peft_model(backbone, lora)


def build_embedder(
    cfg: EmbedderConfig, *, device: torch.device | None = None, trainable: bool = True
) -> Embedder:
    """Load the backbone, add LoRA (if enabled) and a freshly initialised latent layer.

    `trainable=False` builds the plain backbone with mean pooling: no adapters, and the latent
    layer only if enabled (it is the identity until trained).
    """
    device = device or pick_device("auto")
    loaded: LoadedBackbone = load_backbone(cfg.backbone, device)
    backbone = loaded.model
    if cfg.lora.enabled and trainable:
        backbone = apply_lora(backbone, cfg.lora)
    else:
        backbone.requires_grad_(False)
    embedder = Embedder(backbone, loaded.tokenizer, loaded.mode, loaded.hidden_size, cfg)
    if embedder.latent is not None:
        embedder.latent.to(device)  # float32 whatever the backbone's dtype
    if not trainable:
        embedder.requires_grad_(False)
    count = sum(p.numel() for p in embedder.trainable_parameters())
    logger.info("embedder on %s: %d trainable parameters", device, count)
    return embedder
