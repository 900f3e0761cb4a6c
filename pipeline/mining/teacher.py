"""The teacher retriever: any Hugging Face encoder or decoder embedder, loaded lazily.

torch and transformers are imported inside this module's functions only, so `pipeline`
imports without them. Embeddings are float32, L2-normalised unless configured otherwise.
Texts are encoded in batches sorted by length (less padding, fewer wasted FLOPs) and
returned in input order.

Speed: on GPUs the model runs in bf16 by default and, with several GPUs, one replica per GPU
takes batches in turn. On CPU, float32 is the exact default; ``dtype: bfloat16`` (fast on
CPUs with AVX512-BF16/AMX) and ``quantize: int8`` (dynamic int8 Linear layers) trade a
little agreement with float32 for speed: ``bench/RESULTS.md`` measures how much.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from embedcurate.pipeline.blend import TeacherConfig
from embedcurate.pipeline.packaged import resolve_model_path

logger = logging.getLogger(__name__)


def _pick_devices(device: str) -> list[str]:
    """`auto`: every visible GPU (one replica each), else the CPU; or the one device named."""
    import torch

    if device != "auto":
        return [device]
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class HFTeacher:
    """Embeds queries and documents with a transformers model and a pooling rule.

    The weights load on the first `encode`, not on construction: the name, fingerprint and
    dimension (all a cache lookup needs) come from the config file, so a rerun whose texts
    are all in the embedding cache never loads the model.
    """

    def __init__(self, cfg: TeacherConfig) -> None:
        import torch
        from transformers import AutoConfig

        self.cfg = cfg
        self.name = cfg.model
        self.path = resolve_model_path(cfg.model)
        self.devices = _pick_devices(cfg.device)
        self.device = self.devices[0]
        self.dtype = _pick_dtype(cfg.dtype, self.device)
        self._hidden_size = int(AutoConfig.from_pretrained(self.path).hidden_size)
        self._torch = torch
        self._replicas: list[Any] | None = None
        self._tokenizer: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the weights were loaded (they are on the first `encode`)."""
        return self._replicas is not None

    def load(self) -> HFTeacher:
        """Load the weights now (the first `encode` does it otherwise); returns self."""
        if self._replicas is None:
            self._load()
        return self

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        cfg = self.cfg
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if cfg.pooling == "last":
            tokenizer.padding_side = "left"  # last token sits at index -1 for every row
        # safetensors only: a pickled pytorch_model.bin is refused, never unpickled
        model = AutoModel.from_pretrained(self.path, dtype=self.dtype, use_safetensors=True).eval()
        if cfg.quantize == "int8":
            model = _quantize_int8(model, self.device)
        model = model.to(self.device)
        # one replica per further device; batches go to them in turn from worker threads
        self._replicas = [model] + [_replica(model, d) for d in self.devices[1:]]
        self._tokenizer = tokenizer
        logger.info(
            "teacher %s loaded from %s on %s (%s%s)",
            cfg.model,
            self.path,
            ", ".join(self.devices),
            self.dtype,
            ", int8" if cfg.quantize == "int8" else "",
        )

    @property
    def replicas(self) -> list[Any]:
        if self._replicas is None:
            self._load()
        assert self._replicas is not None
        return self._replicas

    @property
    def model(self) -> Any:
        return self.replicas[0]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @property
    def dimension(self) -> int:
        return self._hidden_size

    @property
    def fingerprint(self) -> str:
        """What decides the embeddings (model, weights, pooling, length, precision): cache key."""
        weights = sorted(Path(self.path).glob("*.safetensors")) + sorted(
            Path(self.path).glob("*.bin")
        )
        identity = {
            "model": self.cfg.model,
            "weights": [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights],
            "pooling": self.cfg.pooling,
            "normalize": self.cfg.normalize,
            "max_length": self.cfg.max_length,
            "dtype": str(self.dtype),
            "quantize": self.cfg.quantize,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{Path(self.cfg.model).name}-{digest[:16]}"

    def query_texts(self, texts: Sequence[str]) -> list[str]:
        """Texts as the teacher sees them on the query side (instruction prefixed)."""
        prefix = self.cfg.query_instruction or ""
        return [prefix + t for t in texts]

    def document_texts(self, texts: Sequence[str]) -> list[str]:
        prefix = self.cfg.document_prefix or ""
        return [prefix + t for t in texts]

    def encode_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode(self.query_texts(texts), progress=progress)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode(self.document_texts(texts), progress=progress)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 embeddings in input order."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        starts = list(range(0, len(texts), self.cfg.batch_size))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(starts), desc=f"encode ({self.name})", unit="batch")

        def run(step: int) -> None:
            index = order[starts[step] : starts[step] + self.cfg.batch_size]
            replica = step % len(self.replicas)
            out[index] = self._encode_batch([texts[i] for i in index], replica)
            if bar is not None:
                bar.update()

        if len(self.replicas) == 1:
            for step in range(len(starts)):
                run(step)
        else:
            with ThreadPoolExecutor(max_workers=len(self.replicas)) as pool:
                list(pool.map(run, range(len(starts))))
        if bar is not None:
            bar.close()
        return out

    def _encode_batch(self, texts: list[str], replica: int = 0) -> np.ndarray:
        torch = self._torch
        model, device = self.replicas[replica], self.devices[replica]
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (batch, seq, hidden)
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


def _quantize_int8(model: Any, device: str) -> Any:
    """Dynamic int8 Linear layers, per-channel weight scales (CPU only)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if not device.startswith("cpu"):
        raise ValueError("quantize: int8 runs on CPU only; use dtype bfloat16 on GPUs")
    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, torch.qint8)


def _replica(model: Any, device: str) -> Any:
    import copy

    return copy.deepcopy(model).to(device).eval()


HASHING_PREFIX = "hashing:"


class HashingTeacher:
    """A cheap deterministic lexical stand-in: signed feature hashing of normalised words.

    Not a retriever for real mining. It exists so that tests and the memory benchmark can push
    a million documents through the mining path without a neural model's encoding time.
    Named in a blend as ``teacher.model: "hashing:DIM"``.
    """

    def __init__(self, cfg: TeacherConfig, dim: int) -> None:
        self.cfg = cfg
        self.name = cfg.model
        self._dim = dim

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return f"hashing-{self._dim}-v1"

    def query_texts(self, texts: Sequence[str]) -> list[str]:
        return [(self.cfg.query_instruction or "") + t for t in texts]

    def document_texts(self, texts: Sequence[str]) -> list[str]:
        return [(self.cfg.document_prefix or "") + t for t in texts]

    def encode_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode(self.query_texts(texts), progress)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode(self.document_texts(texts), progress)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) unit vectors; each word adds +-1 at crc32(word) mod dim."""
        import zlib

        from embedcurate.pipeline.textnorm import normalize_text

        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        rows: list[int] = []
        codes: list[int] = []
        for row, text in enumerate(texts):
            words = normalize_text(text).split()
            rows.extend([row] * len(words))
            codes.extend(zlib.crc32(word.encode("utf-8")) for word in words)
        code_array = np.asarray(codes, dtype=np.uint32)
        signs = np.where(code_array & 0x80000000, 1.0, -1.0).astype(np.float32)
        np.add.at(out, (np.asarray(rows, dtype=np.int64), code_array % self._dim), signs)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        out[norms[:, 0] == 0, 0] = 1.0  # an empty text still gets a unit vector
        return out


def load_teacher(
    cfg: TeacherConfig | None = None, *, eager: bool = False
) -> HFTeacher | HashingTeacher:
    """The configured teacher; its weights load on first use unless `eager` (to fail early)."""
    cfg = cfg or TeacherConfig()
    if cfg.model.startswith(HASHING_PREFIX):
        return HashingTeacher(cfg, int(cfg.model.removeprefix(HASHING_PREFIX)))
    teacher = HFTeacher(cfg)
    return teacher.load() if eager else teacher


_SHARED: dict[str, HFTeacher | HashingTeacher] = {}
_SHARED_LOCK = threading.Lock()


def _shared_key(cfg: TeacherConfig) -> str:
    """What decides the replica (cache settings do not)."""
    return cfg.model_dump_json(exclude={"cache", "cache_dir"})


def shared_teacher(cfg: TeacherConfig) -> HFTeacher | HashingTeacher:
    """This process's teacher for `cfg`, built on first use and reused after.

    A worker that encodes several parts of a corpus (and then, perhaps, runs the mine stage)
    loads the weights once. Only one teacher is kept: asking for another releases the first,
    so a long-lived worker never holds two models.
    """
    key = _shared_key(cfg)
    with _SHARED_LOCK:
        teacher = _SHARED.get(key)
        if teacher is None:
            _SHARED.clear()
            teacher = _SHARED[key] = load_teacher(cfg)
        return teacher


def release_shared_teacher(cfg: TeacherConfig) -> None:
    """Drop this process's teacher for `cfg` (its weights go when nothing else holds them)."""
    with _SHARED_LOCK:
        _SHARED.pop(_shared_key(cfg), None)
