"""The teacher retriever: any Hugging Face encoder or decoder embedder, loaded lazily.

torch and transformers are imported inside this module's functions only, so `pipeline`
imports without them, and a teacher whose texts are all cached never imports them at all
(its name, dimension and fingerprint come from the model's `config.json`). Embeddings are
float32, L2-normalised unless configured otherwise. Texts are encoded in batches sorted by
length (less padding, fewer wasted FLOPs) and returned in input order.

Speed, by default (`dtype: auto`, `backend: auto`):
- on GPUs the model runs in PyTorch in bf16 and, with several GPUs, one replica per GPU
  takes batches in turn;
- on a CPU with native bf16 (AVX512-BF16 or AMX) it runs in bf16, through OpenVINO when that
  is installed (`pipeline.mining.openvino_runtime`), else through PyTorch;
- on other CPUs in float32.
``bench/RESULTS.md`` measures the speed of each path and its agreement with float32 negatives.
``quantize: int8`` (dynamic int8 Linear layers, PyTorch on CPU) is kept as an option.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from embedcurate.pipeline.blend import TeacherConfig
from embedcurate.pipeline.hardware import cpu_has_native_bf16
from embedcurate.pipeline.packaged import resolve_model_path

logger = logging.getLogger(__name__)


def cuda_may_be_present() -> bool:
    """False only when there is certainly no CUDA device, decided without importing torch
    (1-2 s): on Linux no NVIDIA device node means no CUDA; elsewhere torch is asked."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        return any(Path("/dev").glob("nvidia[0-9]*"))
    return True


def _pick_devices(device: str) -> list[str]:
    """`auto`: every visible GPU (one replica each), else the CPU; or the one device named."""
    if device != "auto":
        return [device]
    if not cuda_may_be_present():
        return ["cpu"]
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def resolve_dtype(dtype: str, device: str, quantize: str = "none") -> str:
    """The precision `auto` means on this device: bf16 on GPUs and on CPUs with native bf16
    (its negatives agree with float32's on the share `bench/RESULTS.md` records), else fp32;
    always fp32 under `quantize: int8`, whose dynamic quantisation takes float32 weights."""
    if dtype != "auto":
        return dtype
    if quantize != "none":
        return "float32"
    if device.startswith("cuda") or cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


# Encoder families whose transformers modules OpenVINO's tracer converts faithfully (checked
# against PyTorch in the tests for BERT); `backend: auto` takes OpenVINO for these only, and a
# decoder teacher (E5-Mistral and the like, `pooling: last`) stays on PyTorch unless the blend
# asks for `backend: openvino` explicitly.
OPENVINO_AUTO_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2"}
)


def resolve_backend(cfg: TeacherConfig, device: str, model_type: str = "bert") -> str:
    """`auto`: OpenVINO for a plain (not int8) CPU teacher of an encoder family it converts
    (`OPENVINO_AUTO_TYPES`) when it is installed, else PyTorch."""
    from embedcurate.pipeline.mining.openvino_runtime import openvino_installed

    if cfg.backend == "openvino":
        if not device.startswith("cpu"):
            raise ValueError(f"teacher.backend: openvino runs on CPU only, not {device!r}")
        if cfg.quantize != "none":
            raise ValueError("teacher.backend: openvino does not take quantize: int8")
        if not openvino_installed():
            raise ModuleNotFoundError(
                "teacher.backend: openvino needs the openvino package: pip install openvino"
            )
        return "openvino"
    if cfg.backend == "torch":
        return "torch"
    plain_cpu = device.startswith("cpu") and cfg.quantize == "none"
    convertible = model_type in OPENVINO_AUTO_TYPES
    return "openvino" if plain_cpu and convertible and openvino_installed() else "torch"


def cpu_threads(configured: int | None) -> int:
    """The teacher's CPU threads: the configured number, else every core this process may use."""
    from embedcurate.pipeline.mining.openvino_runtime import available_cpus

    return configured or available_cpus()


def read_model_config(path: str) -> dict[str, Any]:
    """The model's config.json as a dict, read without importing transformers; a hub id or
    an unreadable file goes through transformers' AutoConfig."""
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        return dict(json.loads(config_file.read_text(encoding="utf-8")))
    from transformers import AutoConfig

    return dict(AutoConfig.from_pretrained(path).to_dict())


def model_dimension(config: dict[str, Any]) -> int:
    """The embedding width: the hidden size under any of the names configs use for it."""
    for key in ("hidden_size", "d_model", "dim"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ValueError(f"teacher config has no hidden size (model_type {config.get('model_type')})")


class HFTeacher:
    """Embeds queries and documents with a transformers model and a pooling rule.

    The weights load on the first `encode`, not on construction: the name, fingerprint and
    dimension (all a cache lookup needs) come from the model's files, so a rerun whose texts
    are all in the embedding cache never loads the model, nor imports torch.
    """

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.name = cfg.model
        self.path = resolve_model_path(cfg.model)
        self.devices = _pick_devices(cfg.device)
        self.device = self.devices[0]
        self.dtype_name = resolve_dtype(cfg.dtype, self.device, cfg.quantize)
        config = read_model_config(self.path)
        self.backend = resolve_backend(cfg, self.device, str(config.get("model_type", "")))
        self.threads = cpu_threads(cfg.threads) if self.device.startswith("cpu") else None
        self._hidden_size = model_dimension(config)
        self._replicas: list[Any] | None = None
        self._tokenizer: Any = None

    @property
    def dtype(self) -> Any:
        """The torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.dtype_name)

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
        from transformers import AutoTokenizer

        cfg = self.cfg
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if cfg.pooling == "last":
            tokenizer.padding_side = "left"  # last token sits at index -1 for every row
        if self.backend == "openvino":
            from embedcurate.pipeline.mining.openvino_runtime import load_openvino_encoder

            assert self.threads is not None
            encoder = load_openvino_encoder(
                cfg.model,
                self.path,
                tokenizer,
                self._weights_identity(),
                self.dtype_name,
                self.threads,
            )
            self._replicas = [encoder]
        else:
            self._replicas = self._load_torch_replicas()
        self._tokenizer = tokenizer
        logger.info(
            "teacher %s loaded from %s on %s (%s, %s%s%s)",
            cfg.model,
            self.path,
            ", ".join(self.devices),
            self.backend,
            self.dtype_name,
            ", int8" if cfg.quantize == "int8" else "",
            f", {self.threads} threads" if self.threads else "",
        )

    def _load_torch_replicas(self) -> list[Any]:
        import torch
        from transformers import AutoModel

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        # safetensors only: a pickled pytorch_model.bin is refused, never unpickled
        model = AutoModel.from_pretrained(self.path, dtype=self.dtype, use_safetensors=True)
        model = model.eval()
        if self.cfg.quantize == "int8":
            model = _quantize_int8(model, self.device)
        model = model.to(self.device)
        # one replica per further device; batches go to them in turn from worker threads
        return [model] + [_replica(model, d) for d in self.devices[1:]]

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

    def _weights_identity(self) -> list[tuple[str, int, int]]:
        weights = sorted(Path(self.path).glob("*.safetensors")) + sorted(
            Path(self.path).glob("*.bin")
        )
        return [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]

    @property
    def fingerprint(self) -> str:
        """What decides the embeddings (model, weights, pooling, length, precision, runtime):
        the cache key."""
        identity = {
            "model": self.cfg.model,
            "weights": self._weights_identity(),
            "pooling": self.cfg.pooling,
            "normalize": self.cfg.normalize,
            "max_length": self.cfg.max_length,
            "dtype": f"torch.{self.dtype_name}",
            "quantize": self.cfg.quantize,
        }
        if self.backend != "torch":  # torch keys stay as they were: existing caches stay valid
            identity["backend"] = self.backend
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
        if self.backend == "openvino":
            self._encode_openvino(texts, [order[s : s + self.cfg.batch_size] for s in starts], out)
            if bar is not None:
                bar.update(len(starts))
                bar.close()
            return out

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
        import torch

        with torch.inference_mode():
            hidden, mask = self._hidden_states(texts, replica)
            mask = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
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

    def _hidden_states(self, texts: list[str], replica: int) -> tuple[Any, Any]:
        """(batch, seq, hidden) last hidden states and the (batch, seq) attention mask."""
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        ).to(self.devices[replica])
        return self.replicas[replica](**batch).last_hidden_state, batch["attention_mask"]

    def _encode_openvino(
        self, texts: Sequence[str], batches: list[np.ndarray], out: np.ndarray
    ) -> None:
        """Fill `out` batch by batch through the OpenVINO encoder's parallel streams."""
        tokenize = {"padding": True, "truncation": True, "max_length": self.cfg.max_length}

        def tokenized() -> Iterator[tuple[tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]]:
            for index in batches:
                batch = dict(
                    self.tokenizer([texts[i] for i in index], return_tensors="np", **tokenize)
                )
                yield (index, batch["attention_mask"]), batch

        def store(key: tuple[np.ndarray, np.ndarray], hidden: np.ndarray) -> None:
            index, mask = key
            out[index] = pool_hidden(hidden, mask, self.cfg.pooling, self.cfg.normalize)

        self.replicas[0].map_batches(tokenized(), store)


def pool_hidden(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """The torch path's pooling and normalisation, in numpy (the OpenVINO path has no torch)."""
    if pooling == "mean":
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
    elif pooling == "cls":
        pooled = hidden[:, 0]
    else:
        pooled = hidden[:, -1]
    pooled = pooled.astype(np.float32)
    if normalize:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled = pooled / np.maximum(norms, 1e-12)
    return pooled


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
