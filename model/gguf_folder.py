"""A local GGUF backbone as a plain Hugging Face folder, converted once into the cache.

transformers parses a GGUF's metadata in Python on every load, once each for the config, the
weights and the tokenizer: for the packaged Gemma 3 270M (a 262k-entry vocabulary) that is
about 75 s of a CPU core before a train or encode command does anything. The first load
converts instead: the config, the dequantised weights (fp32 safetensors, so nothing is lost)
and the fast tokenizer are written into a staging folder, checked against what the GGUF load
gave, and renamed into place last, so a killed conversion never leaves a folder that loads.
Later loads read the folder in seconds.

The folder lives in the cache root's `models/converted/`, named by a digest of the GGUF's
resolved path, size and modification time: a changed file converts again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from embedcurate.pipeline.atomic import move_folder_into_place, temp_path_for
from embedcurate.pipeline.packaged import cache_root

logger = logging.getLogger(__name__)

CONVERTED_DIR = "converted"
WEIGHTS = "model.safetensors"
# texts whose token ids the converted tokenizer must reproduce (spaces, case, digits, accents)
PROBE_TEXTS = (
    "Instruct: Given a claim, retrieve documents that support it\nQuery: what makes bread rise",
    "  Ünïcödé — naïve café, 1,234.5 mg/kg; <b>tags</b>\tand\ttabs",
)
# config entries that name where or by which version it was written, not what the model is
WHERE_WRITTEN = ("_name_or_path", "transformers_version", "dtype", "torch_dtype")
_CONVERT_LOCK = threading.Lock()

Loaded = tuple[PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase]


def converted_folder(gguf_path: Path, models_dir: Path | None = None) -> Path:
    """The Hugging Face folder for `gguf_path`, converting it the first time."""
    final = folder_for(gguf_path, models_dir)
    if final.is_dir():
        return final
    with _CONVERT_LOCK:
        if not final.is_dir():
            convert_into(lambda: load_gguf(gguf_path), final)
    return final


def folder_for(gguf_path: Path, models_dir: Path | None = None) -> Path:
    resolved = gguf_path.resolve()
    stat = resolved.stat()
    key = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    digest = hashlib.blake2b(key, digest_size=8).hexdigest()
    models_dir = models_dir or cache_root() / "models"
    return models_dir / CONVERTED_DIR / f"{resolved.stem}-{digest}"


def load_gguf(gguf_path: Path) -> Loaded:
    """Config, fp32 model and tokenizer as transformers reads them from the GGUF (slow)."""
    location = {"gguf_file": gguf_path.name}
    source = str(gguf_path.parent)
    logger.info("reading %s (converted once, into the cache)", gguf_path)
    config = AutoConfig.from_pretrained(source, **location)
    model = AutoModel.from_pretrained(source, config=config, dtype=torch.float32, **location)
    return config, model, AutoTokenizer.from_pretrained(source, **location)


def convert_into(load: Callable[[], Loaded], final: Path) -> None:
    """Save what `load` gives into a staging folder beside `final`; rename it there once the
    saved copy checks out against it.

    Another process converting the same file at the same time renames first or second:
    the second rename fails on the existing folder and its copy is discarded.
    """
    staging = temp_path_for(final)
    shutil.rmtree(staging, ignore_errors=True)  # what a conversion killed here left
    try:
        write_converted(*load(), staging)
        move_folder_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not final.is_dir():
        raise RuntimeError(f"converting into {final} left no folder")
    logger.info("converted into %s", final)


def write_converted(
    config: PretrainedConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
) -> None:
    # save_pretrained refuses a model loaded from a GGUF (it counts as quantised, though its
    # weights are dequantised): the config and the state dict are written directly
    out.mkdir(parents=True, exist_ok=True)
    weights = model.state_dict()
    config.save_pretrained(out)
    save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    check_copy(out, config, weights, tokenizer)
    for path in out.iterdir():
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())


def check_copy(
    out: Path,
    config: PretrainedConfig,
    weights: dict[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """Raise unless `out` loads the same config, the same tensors bit for bit, and a tokenizer
    giving the same ids: a conversion that transformers got wrong must never be kept."""
    problems = [*_config_differences(out, config), *_weight_differences(out, weights)]
    copy = AutoTokenizer.from_pretrained(out)
    problems += [
        f"tokenizer ids differ on {text!r}"
        for text in PROBE_TEXTS
        if copy(text)["input_ids"] != tokenizer(text)["input_ids"]
    ]
    if problems:
        raise RuntimeError(f"{out}: the converted copy differs from the GGUF: {problems[:5]}")


def _config_differences(out: Path, config: PretrainedConfig) -> list[str]:
    saved, loaded = _what_it_is(AutoConfig.from_pretrained(out)), _what_it_is(config)
    return [
        f"config {key}: {loaded.get(key)!r} != {saved.get(key)!r}"
        for key in sorted(saved.keys() | loaded.keys())
        if saved.get(key) != loaded.get(key)
    ]


def _what_it_is(config: PretrainedConfig) -> dict[str, object]:
    entries = config.to_dict()
    return {key: value for key, value in entries.items() if key not in WHERE_WRITTEN}


def _weight_differences(out: Path, weights: dict[str, torch.Tensor]) -> list[str]:
    """Tensor by tensor from the memory-mapped files, so the check holds one tensor at most."""
    saved_names: set[str] = set()
    problems = []
    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                saved_names.add(name)
                if name in weights and not torch.equal(handle.get_tensor(name), weights[name]):
                    problems.append(f"weight {name} differs")
    if missing := sorted(set(weights) - saved_names):
        problems.append(f"weights not saved: {missing[:5]}")
    return problems
