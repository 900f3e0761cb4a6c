"""A cross-encoder judge: any Hugging Face sequence-classification reranker.

The model reads query and candidate together and returns one relevance logit (rerankers
such as bge-reranker or ms-marco MiniLM; the score is its sigmoid) or two or more class
logits (the last class is "relevant"; the score is its softmax probability). This is the
only judge module that imports torch and transformers, lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedcurate.pipeline.blend import CrossEncoderJudgeConfig
from embedcurate.pipeline.judge.verdicts import (
    JudgeError,
    Judgement,
    JudgePair,
    verdict_from_score,
)
from embedcurate.pipeline.packaged import resolve_model_path

logger = logging.getLogger(__name__)

CLASSIFIER_SUFFIX = "ForSequenceClassification"


def _check_is_reranker(config: Any, model: str) -> None:
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith(CLASSIFIER_SUFFIX) for name in architectures):
        found = ", ".join(architectures) or "none recorded"
        raise JudgeError(
            f"cross-encoder judge {model!r} is not a sequence-classification model "
            f"(architectures: {found}); give a reranker such as BAAI/bge-reranker-base"
        )


class CrossEncoderJudge:
    """Scores (query, candidate) pairs with a reranker and thresholds the scores."""

    def __init__(self, cfg: CrossEncoderJudgeConfig) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = cfg
        self.name = f"cross-encoder:{cfg.model}"
        location = str(resolve_model_path(cfg.model))
        try:
            config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise JudgeError(
                f"cross-encoder judge {cfg.model!r}: no model there ({exc.__class__.__name__}); "
                "give a folder or hub id of a sequence-classification reranker"
            ) from exc
        _check_is_reranker(config, cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.model = AutoModelForSequenceClassification.from_pretrained(location).eval()
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)

    def scores(self, pairs: Sequence[JudgePair]) -> np.ndarray:
        """Relevance in [0, 1] per pair, (num_pairs,) float32."""
        import torch

        out = np.zeros(len(pairs), dtype=np.float32)
        for start in range(0, len(pairs), self.cfg.batch_size):
            batch = pairs[start : start + self.cfg.batch_size]
            encoded = self.tokenizer(
                [p.query for p in batch],
                [p.candidate for p in batch],
                truncation=True,
                max_length=self.cfg.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**encoded).logits.float()  # (batch, num_labels)
            if logits.shape[-1] == 1:
                probs = torch.sigmoid(logits[:, 0])
            else:
                probs = torch.softmax(logits, dim=-1)[:, -1]
            out[start : start + len(batch)] = probs.cpu().numpy()
        return out

    def judge(self, pairs: Sequence[JudgePair]) -> list[Judgement]:
        cfg = self.cfg
        return [
            verdict_from_score(float(s), cfg.positive_threshold, cfg.negative_threshold, self.name)
            for s in self.scores(pairs)
        ]
